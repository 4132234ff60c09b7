#!/usr/bin/env python3
"""Tables and targets of bench/llm/llama.sh, from its RESULT lines.

    llama_report.py bench/results/llm-llama-raw.txt

Prints markdown: the engine against llama-batched-bench, dynamo against
llama-server per workload and concurrency, the KV-routed pair against
llama-server, then each target of issue 12 with its ratio and whether it
was met. Ratios are dynamo / llama.cpp, taken within the same run.
"""

import math
import sys


def parse(path):
    rows = []
    for line in open(path):
        if line.startswith("RESULT "):
            rows.append(dict(f.split("=", 1) for f in line.split()[1:]))
    return rows


def num(r, k):
    return float(r[k]) if r and k in r else math.nan


def ratio(a, b):
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def fx(x, digits=2):
    return "–" if math.isnan(x) else f"{x:.{digits}f}×"


def f1(x):
    return "–" if math.isnan(x) else f"{x:,.1f}"


def main():
    rows = parse(sys.argv[1])
    targets = []

    eng = {(r["name"], int(r["pl"])): r for r in rows if "pl" in r}
    pls = sorted({pl for _, pl in eng})
    if pls:
        print("### The engine in process vs llama-batched-bench\n")
        print("Tokens/s = (prompt + generated tokens of all sequences) / wall time, "
              "batched-bench's S; TG = generated tokens/s after the last prompt was done.\n")
        print("| batch | engine tok/s | batched-bench tok/s | engine / bb | engine TG | bb TG |")
        print("|---:|---:|---:|---:|---:|---:|")
        for pl in pls:
            e, b = (eng.get((n, pl)) for n in ("engine", "batched-bench"))
            rt = ratio(num(e, "speed"), num(b, "speed"))
            print(f"| {pl} | {f1(num(e, 'speed'))} | {f1(num(b, 'speed'))} | {fx(rt)} | "
                  f"{f1(num(e, 'speed_tg'))} | {f1(num(b, 'speed_tg'))} |")
            targets.append((f"engine alone, batch {pl}: tokens/s ≥ 0.9× batched-bench", rt, rt >= 0.9))
        print()

    serve = {(r["name"], r["workload"], int(r["concurrency"])): r for r in rows if "workload" in r}

    def table(title, dyn, ls):
        keys = sorted({(w, c) for n, w, c in serve if n == dyn},
                      key=lambda k: (k[0] != "unique", k[1]))
        if not keys:
            return
        print(f"### {title}\n")
        print("| workload | conc. | requests | out tok/s dynamo | llama-server | ratio | "
              "TTFT p50 ms dynamo / llama-server | TTFT p90 ms | TTFT mean ratio | "
              "TPOT ms dynamo / llama-server | TPOT ratio | dynamo cached prompt share |")
        print("|---|---:|---:|---:|---:|---:|---|---|---:|---|---:|---:|")
        for w, c in keys:
            d, s = serve.get((dyn, w, c)), serve.get((ls, w, c))
            cached = num(d, "cached_tokens")
            share = "–" if cached < 0 else f"{100 * cached / max(1.0, num(d, 'prompt_tokens')):.0f}%"
            err = sum(int(r["errors"]) for r in (d, s) if r)
            print(f"| {w} | {c} | {d['requests']}{f' ({err} failed)' if err else ''} | "
                  f"{f1(num(d, 'out_tok_s'))} | {f1(num(s, 'out_tok_s'))} | "
                  f"{fx(ratio(num(d, 'out_tok_s'), num(s, 'out_tok_s')))} | "
                  f"{f1(num(d, 'ttft_p50_ms'))} / {f1(num(s, 'ttft_p50_ms'))} | "
                  f"{f1(num(d, 'ttft_p90_ms'))} / {f1(num(s, 'ttft_p90_ms'))} | "
                  f"{fx(ratio(num(d, 'ttft_mean_ms'), num(s, 'ttft_mean_ms')))} | "
                  f"{f1(num(d, 'tpot_mean_ms'))} / {f1(num(s, 'tpot_mean_ms'))} | "
                  f"{fx(ratio(num(d, 'tpot_mean_ms'), num(s, 'tpot_mean_ms')))} | {share} |")
        print("\nratio: dynamo ÷ llama-server (out tok/s: above 1 is dynamo faster; TTFT and "
              "TPOT: below 1 is dynamo faster). TPOT: mean over requests of "
              "(latency − TTFT) / (tokens − 1).\n")
        return keys

    keys = table("Serving: one dynamo worker vs llama-server", "dynamo", "llama-server") or []
    cs = sorted({c for _, c in keys})
    if cs:
        cmax, cmin = cs[-1], cs[0]
        get = lambda n, w, c, k: num(serve.get((n, w, c)), k)  # noqa: E731
        r = ratio(get("dynamo", "unique", cmax, "out_tok_s"), get("llama-server", "unique", cmax, "out_tok_s"))
        targets.append((f"unique prompts, concurrency {cmax}: output tokens/s ≥ 1.0×", r, r >= 1.0))
        for c in cs:
            r = ratio(get("dynamo", "chat", c, "ttft_mean_ms"), get("llama-server", "chat", c, "ttft_mean_ms"))
            targets.append((f"prefix-heavy chat, concurrency {c}: mean TTFT ≤ 0.5×", r, r <= 0.5))
            r = ratio(get("dynamo", "chat", c, "out_tok_s"), get("llama-server", "chat", c, "out_tok_s"))
            targets.append((f"prefix-heavy chat, concurrency {c}: output tokens/s ≥ 1.2×", r, r >= 1.2))
        for w in ("unique", "chat"):
            r = ratio(get("dynamo", w, cmin, "tpot_mean_ms"), get("llama-server", w, cmin, "tpot_mean_ms"))
            targets.append((f"{w}, concurrency {cmin}: time per output token ≤ 1.1×", r, r <= 1.1))

    table("Two dynamo workers, KV router, vs one llama-server (same total threads)",
          "dynamo-router", "llama-server-r")

    if targets:
        print("### Targets\n")
        for what, r, ok in targets:
            state = "not measured" if math.isnan(r) else ("met" if ok else "**missed**")
            print(f"- {what}: {fx(r)} — {state}")


if __name__ == "__main__":
    main()
