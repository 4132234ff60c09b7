#!/usr/bin/env bash
# Builds llama.cpp once into a cached prefix that the llama.cpp engine links
# against: the source is the copy vendored by llama-cpp-python's source
# distribution at a pinned version (fetched with pip, checked against a pinned
# sha256), built as static CPU libraries plus llama-server and
# llama-batched-bench (bench/llm measures our engine against them).
#
# The prefix is $DYN_DEPS_DIR/llama.cpp-<commit> (default $HOME/.cache/dynamo);
# a prefix that holds the stamp file is complete and is reused as it is, so a
# second run builds nothing. Prints the prefix on its last line.
#
#   DYN_LLAMA_CUDA=1   also builds the CUDA backend (GGML_CUDA=ON; needs nvcc)
#                      into llama.cpp-<commit>-cuda.
#   DYN_JOBS=N         parallel compile jobs (default: nproc).
set -euo pipefail

PKG=llama-cpp-python
VERSION=0.3.16
SHA256=34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6
COMMIT=4227c9b     # llama.cpp commit vendored by $PKG $VERSION

deps_dir=${DYN_DEPS_DIR:-$HOME/.cache/dynamo}
suffix=""
cuda=OFF
if [ "${DYN_LLAMA_CUDA:-0}" = 1 ]; then suffix="-cuda"; cuda=ON; fi
prefix="$deps_dir/llama.cpp-$COMMIT$suffix"
stamp="$prefix/.built-$PKG-$VERSION"
if [ -f "$stamp" ]; then
  echo "$prefix"
  exit 0
fi

py=$(command -v python3)
jobs=${DYN_JOBS:-$(nproc)}
work=$(mktemp -d "$deps_dir/.llama-build.XXXXXX" 2>/dev/null ||
       { mkdir -p "$deps_dir"; mktemp -d "$deps_dir/.llama-build.XXXXXX"; })
trap 'rm -rf "$work"' EXIT

echo "deps: fetching $PKG $VERSION (source of llama.cpp $COMMIT)" >&2
"$py" -m pip download -q --no-binary :all: --no-deps "$PKG==$VERSION" -d "$work" >&2
sdist="$work/llama_cpp_python-$VERSION.tar.gz"
[ -f "$sdist" ] || { echo "deps: pip did not leave $sdist" >&2; exit 1; }
got=$(sha256sum "$sdist" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  echo "deps: $sdist has sha256 $got, expected $SHA256" >&2
  exit 1
fi
tar -xzf "$sdist" -C "$work" "llama_cpp_python-$VERSION/vendor/llama.cpp"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"

echo "deps: building llama.cpp $COMMIT (CUDA $cuda) into $prefix" >&2
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_CUDA="$cuda" \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_COMMON=ON \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON >/dev/null
# Only the library and the two programs bench/llm runs, not every tool.
cmake --build "$work/build" -j "$jobs" --target llama llama-server llama-batched-bench >&2

rm -rf "$prefix"
mkdir -p "$prefix/include" "$prefix/lib" "$prefix/bin"
cp "$src/include/llama.h" "$src/include/llama-cpp.h" "$src"/ggml/include/*.h "$prefix/include/"
find "$work/build" -name '*.a' -exec cp {} "$prefix/lib/" \;
cp "$work/build/bin/llama-server" "$work/build/bin/llama-batched-bench" "$prefix/bin/"
echo "$COMMIT" > "$prefix/COMMIT"
touch "$stamp"
echo "$prefix"
