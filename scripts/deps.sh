#!/usr/bin/env bash
# Installs dynamo's Debian build and run-time dependencies when missing.
# Safe to run again: it asks apt only for what is not installed yet.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libjansson-dev libyaml-dev
      libcurl4-openssl-dev libnats-dev libxxhash-dev libhttp-parser-dev clang nats-server
      python3 python3-venv curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
