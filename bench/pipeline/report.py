#!/usr/bin/env python3
"""Markdown table from the RESULT lines run.sh collected (stdlib only).

    python3 report.py bench/results/pipeline-raw.txt

For each framework: the median over rounds of requests/s, p50 and p99, the
sum of errors, and the ratios against dynamo-python, each the median of the
per-round ratios (a round's runs are minutes apart at most; the machine's
speed drifts more than that between runs far apart). rps ratio =
framework rps / dynamo-python rps (higher is better); p50 ratio = framework
p50 / dynamo-python p50 (lower is better).
"""

from __future__ import annotations

import re
import shlex
import statistics
import sys

ORDER = ["dynamo-python", "dynamo-c", "bentoml", "ray"]
REF = "dynamo-python"


def parse(path: str):
    header, rows = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("# "):
            header.append(line[2:])
        elif line.startswith("RESULT "):
            kv = {}
            for tok in shlex.split(line[7:]):
                k, _, v = tok.partition("=")
                kv[k] = v
            rows.append(kv)
    return header, rows


def fnum(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def ratio(x: float) -> str:
    if x >= 10:
        return f"{x:.1f}×"
    if x >= 0.1:
        return f"{x:.2f}×"
    return f"{x:.3f}×"


def main() -> int:
    header, rows = parse(sys.argv[1])
    c1 = [r for r in rows if r["name"].endswith("@1") and "rps" in r]
    rows = [r for r in rows if not r["name"].endswith("@1")]
    names = [n for n in ORDER if any(r["name"] == n for r in rows)]
    names += sorted({r["name"] for r in rows} - set(names))
    ok = [r for r in rows if "rps" in r]
    by = {n: [r for r in ok if r["name"] == n] for n in names}
    ref = {r["round"]: r for r in by.get(REF, [])}
    meta = {}
    for h in header:
        k, _, v = h.partition(": ")
        meta[k] = v

    out = []
    load = meta.get("load", "")
    out.append(f"Load: {load} (`bench/pipeline/load.py`, one asyncio process, keep-alive HTTP/1.1). ")
    out.append(f"Machine: {meta.get('machine', '?')}; server and load generator share it.")
    out.append("")
    out.append("| framework | rps | p50 ms | p99 ms | errors | rps ratio vs dynamo-python | p50 ratio | load-gen CPU |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        rs = by[n]
        if not rs:
            why = "; ".join(sorted({r.get("skipped", "?") for r in rows if r["name"] == n}))
            out.append(f"| {n} | skipped: {why} | | | | | | |")
            continue
        rps = statistics.median(float(r["rps"]) for r in rs)
        p50 = statistics.median(float(r["p50_ms"]) for r in rs)
        p99 = statistics.median(float(r["p99_ms"]) for r in rs)
        errs = sum(int(r["errors"]) for r in rs)
        cpu = statistics.median(float(r.get("client_cpu", "nan")) for r in rs)
        rr = [float(r["rps"]) / float(ref[r["round"]]["rps"]) for r in rs if r["round"] in ref]
        pr = [float(r["p50_ms"]) / float(ref[r["round"]]["p50_ms"]) for r in rs if r["round"] in ref]
        rps_r = ratio(statistics.median(rr)) if rr else "–"
        p50_r = ratio(statistics.median(pr)) if pr else "–"
        note = "" if len(rs) == len({r["round"] for r in rows if r["name"] == n}) else " (some rounds skipped)"
        out.append(
            f"| {n}{note} | {fnum(rps)} | {fnum(p50, 2)} | {fnum(p99, 2)} | {errs} | {rps_r} | {p50_r} | {cpu:.2f} |"
        )
    out.append("")
    out.append("Medians over rounds; ratios are medians of per-round ratios. rps ratio: framework ÷ dynamo-python "
               "(below 1: fewer requests/s). p50 ratio: framework ÷ dynamo-python (above 1: slower). "
               "load-gen CPU: the load generator's CPU time ÷ wall time (1.00 = one core).")
    out.append("")
    if c1:
        out.append(f"Unloaded latency ({meta.get('unloaded', 'concurrency=1')}):")
        out.append("")
        out.append("| framework | rps (1 connection) | p50 ms | p99 ms | errors | p50 ratio vs dynamo-python |")
        out.append("|---|---:|---:|---:|---:|---:|")
        ref1 = {r["round"]: r for r in c1 if r["name"] == REF + "@1"}
        for n in names:
            rs = [r for r in c1 if r["name"] == n + "@1"]
            if not rs:
                continue
            pr = [float(r["p50_ms"]) / float(ref1[r["round"]]["p50_ms"]) for r in rs if r["round"] in ref1]
            out.append(
                f"| {n} | {fnum(statistics.median(float(r['rps']) for r in rs))} | "
                f"{fnum(statistics.median(float(r['p50_ms']) for r in rs), 2)} | "
                f"{fnum(statistics.median(float(r['p99_ms']) for r in rs), 2)} | "
                f"{sum(int(r['errors']) for r in rs)} | {ratio(statistics.median(pr)) if pr else '–'} |"
            )
        out.append("")
    out.append("Per round:")
    out.append("")
    out.append("| round | framework | rps | p50 ms | p99 ms | errors | load-gen CPU | ready after s |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    order = {n: i for i, n in enumerate(names)}
    key = lambda r: (int(r.get("round", 0)), order.get(r["name"].removesuffix("@1"), 99), r["name"].endswith("@1"))
    for r in sorted(rows + c1, key=key):
        if "rps" in r:
            out.append(
                f"| {r['round']} | {r['name']} | {fnum(float(r['rps']))} | {fnum(float(r['p50_ms']), 2)} | "
                f"{fnum(float(r['p99_ms']), 2)} | {r['errors']} | {float(r.get('client_cpu', 'nan')):.2f} | "
                f"{r.get('ready_s', '')} |"
            )
        else:
            out.append(f"| {r.get('round', '')} | {r['name']} | skipped: {r.get('skipped', '?')} | | | | | |")
    out.append("")
    for h in header:
        out.append(f"- {h}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
