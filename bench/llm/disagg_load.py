#!/usr/bin/env python3
"""Long prompts mixed into steady decoding: the aggregated vs disaggregated
serving benchmark's client (bench/llm/disagg.sh).

Standard library only. For DURATION seconds it keeps STREAMS steady streams
busy (closed loop: each sends a short prompt of about SHORT_WORDS words for
MAX_TOKENS tokens, and the next as soon as the answer ends) and, open loop,
sends a long prompt every INTERVAL seconds (LONG_MIN..LONG_MAX words, each
led by its own number, so no cache holds any of it, for LONG_TOKENS
tokens; about 3.5 tokens a word). Then it
waits for what is in flight. SEED fixes every prompt and length, so runs
against differently served graphs see the same requests.

Per request it records, on the client, the time each streamed chunk with
content arrived. It prints one line:

    RESULT name=N requests=R long=L errors=E ttft_p50_ms ttft_p90_ms
           long_ttft_p50_ms long_ttft_p90_ms itl_p50_ms itl_p90_ms itl_p99_ms
           tpot_p50_ms tpot_p90_ms tokens_per_s long_prompt_tokens_mean ...

where TTFT is request written -> first content chunk (all requests, and the
long ones alone), ITL the gaps between consecutive content chunks of a
stream pooled over every stream (what a reader of the stream sees between
two tokens), TPOT per request (last chunk - first chunk) / (tokens - 1)
and tokens_per_s the completion tokens that arrived within the DURATION
window divided by DURATION.

    python3 disagg_load.py --port 8000 --name agg --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time


async def complete(host: str, port: int, body: dict, timeout: float):
    """One streamed completion: (t_sent, [arrival times of content chunks], usage)."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n").encode()
        t0 = time.perf_counter()
        writer.write(head + payload)
        await writer.drain()
        status = int((await asyncio.wait_for(reader.readline(), timeout)).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {(await reader.read(2000)).decode(errors='replace')}")
        arrivals, usage, buf = [], None, b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            # Chunked framing is interleaved; each SSE event is written in
            # one chunk, so events are found whole inside it.
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    i = line.find(b"data: ")
                    if i < 0 or line[i + 6:].strip() == b"[DONE]":
                        continue
                    msg = json.loads(line[i + 6:])
                    if "error" in msg:
                        raise RuntimeError(f"stream error: {msg['error']}")
                    if msg.get("usage"):
                        usage = msg["usage"]
                    if any(ch.get("text") for ch in msg.get("choices", [])):
                        arrivals.append(now)
        if not arrivals or usage is None:
            raise RuntimeError("stream ended without content or usage")
        return t0, arrivals, usage
    finally:
        writer.close()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    words = ("alpha beta gamma delta river stone cloud paper light green "
             "north table music water field quick order story").split()
    done, errors = [], []   # (kind, t0, arrivals, usage)
    t_start = time.perf_counter()
    t_end = t_start + args.duration

    async def one(kind, body):
        try:
            t0, arr, usage = await complete(args.host, args.port, body, args.timeout)
            done.append((kind, t0, arr, usage))
        except Exception as e:  # counted; the run goes on
            errors.append(f"{kind}: {e}")

    def body(prompt, max_tokens, seed):
        return {"model": args.model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, "seed": seed, "ignore_eos": True}

    # Every prompt is drawn before the run, so the server's speed cannot
    # change which requests are sent in which order.
    shorts = [[" ".join(rng.choice(words) for _ in range(args.short_words)) + f" s{s}q{q}"
               for q in range(1000)] for s in range(args.streams)]
    longs = []
    for j in range(int(args.duration / args.interval) + 1):
        n = rng.randint(args.long_min, args.long_max)
        longs.append(f"document {j}: " + " ".join(rng.choice(words) for _ in range(n)))

    async def stream(s):
        q = 0
        while time.perf_counter() < t_end and q < len(shorts[s]):
            await one("short", body(shorts[s][q], args.max_tokens, args.seed + 1000 * s + q))
            q += 1

    async def long_prompts():
        tasks = []
        for j, prompt in enumerate(longs):
            at = t_start + j * args.interval
            if at >= t_end:
                break
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            tasks.append(asyncio.create_task(one("long", body(prompt, args.long_tokens,
                                                              args.seed + 7 + j))))
        await asyncio.gather(*tasks)

    await asyncio.gather(long_prompts(), *(stream(s) for s in range(args.streams)))
    if not done:
        print(f"RESULT name={args.name} requests=0 errors={len(errors)} first_error={errors[:1]}")
        return 1
    ttft = [(a[0] - t0) * 1e3 for _, t0, a, _ in done]
    long_ttft = [(a[0] - t0) * 1e3 for k, t0, a, _ in done if k == "long"]
    itl = [(a[i] - a[i - 1]) * 1e3 for _, _, a, _ in done for i in range(1, len(a))]
    tpot = [(a[-1] - a[0]) * 1e3 / (u["completion_tokens"] - 1)
            for _, _, a, u in done if u["completion_tokens"] > 1]
    # Completion tokens that arrived inside the window: chunks carry one
    # token each unless the server merged some, so scale by the request's
    # tokens per chunk.
    in_window = sum(u["completion_tokens"] * sum(t <= t_end for t in a) / len(a)
                    for _, _, a, u in done)
    long_prompt = [u["prompt_tokens"] for k, _, _, u in done if k == "long"]
    print(f"RESULT name={args.name} requests={len(done)} long={len(long_prompt)} errors={len(errors)} "
          f"ttft_p50_ms={pct(ttft, .5):.1f} ttft_p90_ms={pct(ttft, .9):.1f} "
          f"long_ttft_p50_ms={pct(long_ttft, .5):.1f} long_ttft_p90_ms={pct(long_ttft, .9):.1f} "
          f"itl_p50_ms={pct(itl, .5):.2f} itl_p90_ms={pct(itl, .9):.2f} itl_p99_ms={pct(itl, .99):.2f} "
          f"tpot_p50_ms={pct(tpot, .5):.2f} tpot_p90_ms={pct(tpot, .9):.2f} "
          f"tokens_per_s={in_window / args.duration:.1f} "
          f"long_prompt_tokens_mean={sum(long_prompt) / max(len(long_prompt), 1):.0f} "
          f"long_prompt_tokens_min={min(long_prompt, default=0)} "
          f"long_prompt_tokens_max={max(long_prompt, default=0)} "
          f"duration_s={time.perf_counter() - t_start:.1f}")
    if errors:
        print(f"first error: {errors[0]}", file=sys.stderr)
    return 0 if not errors else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--name", default="run")
    ap.add_argument("--model", default="dynamo-sim")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--short-words", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between long prompts")
    ap.add_argument("--long-min", type=int, default=1200, help="words of the shortest long prompt")
    ap.add_argument("--long-max", type=int, default=2250, help="words of the longest long prompt")
    ap.add_argument("--long-tokens", type=int, default=16, help="tokens a long prompt generates")
    ap.add_argument("--timeout", type=float, default=120.0)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
