#!/usr/bin/env python3
"""Prefix-heavy, multi-turn chat workload for the KV-routing benchmark.

Standard library only. USERS simulated users each belong to one of
SYSTEMS groups that share a long system prompt (a company's assistant
persona, say); every user holds a conversation of TURNS turns: each turn
sends the system prompt, the whole history so far and a new question, and
appends the streamed answer to the history. So every request shares a long
prefix with earlier requests: the system prompt with its group, and the
whole previous turn with its own conversation. Up to CONCURRENCY users are
active at a time (closed loop: a user's next turn starts when the previous
answer ended); the order in which users start is fixed by SEED.

The same SEED gives the same prompts, questions and user order, whatever
the server does, so runs against differently routed graphs see the same
workload.

For each request it measures, on the client: time to first token (request
written -> first chunk with content), the end-to-end latency, and the
completion and cached prompt tokens from the final usage chunk
(stream_options.include_usage). Prints one line:

    RESULT name=N requests=R errors=E ttft_mean_ms=X ttft_p50_ms=X ttft_p90_ms=X
           latency_mean_ms=X throughput_rps=X tokens_per_s=X cached_fraction=F
           duration_s=D

    python3 prefix_load.py --port 8000 --name kv
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "up more out who what can said about do into them some could him time only my than then its "
         "new also two may after like other first any these our such over most where system policy "
         "customer order account billing support product service answer question request detail "
         "please guide refund delivery warranty schedule report").split()


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


class Workload:
    def __init__(self, args: argparse.Namespace):
        rng = random.Random(args.seed)
        self.systems = [f"You are assistant {i}. " + text(rng, args.system_words)
                        for i in range(args.systems)]
        self.users = []
        for u in range(args.users):
            questions = [text(rng, args.question_words) + "?" for _ in range(args.turns)]
            self.users.append((u % args.systems, questions))
        self.order = list(range(args.users))
        rng.shuffle(self.order)


async def chat(host: str, port: int, body: dict, timeout: float):
    """One streamed chat completion: (ttft_s, latency_s, content, usage)."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n").encode()
        t0 = time.perf_counter()
        writer.write(head + payload)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        status = int(status_line.split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {(await reader.read(2000)).decode(errors='replace')}")
        ttft = None
        content, usage, buf = [], None, b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            buf += chunk
            # Chunked transfer framing is interleaved; SSE lines are found
            # whole inside it because each event is written in one chunk.
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    i = line.find(b"data: ")
                    if i < 0:
                        continue
                    data = line[i + 6:].strip()
                    if data == b"[DONE]":
                        continue
                    msg = json.loads(data)
                    if "error" in msg:
                        raise RuntimeError(f"stream error: {msg['error']}")
                    if msg.get("usage"):
                        usage = msg["usage"]
                    for ch in msg.get("choices", []):
                        piece = ch.get("delta", {}).get("content")
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            content.append(piece)
        latency = time.perf_counter() - t0
        if ttft is None or usage is None:
            raise RuntimeError("stream ended without content or usage")
        return ttft, latency, "".join(content), usage
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> int:
    wl = Workload(args)
    results, errors = [], []
    queue = asyncio.Queue()
    for u in wl.order:
        queue.put_nowait(u)

    async def user_loop():
        while not queue.empty():
            u = queue.get_nowait()
            sys_i, questions = wl.users[u]
            messages = [{"role": "system", "content": wl.systems[sys_i]}]
            for q in questions:
                messages.append({"role": "user", "content": q})
                body = {"model": args.model, "messages": messages, "stream": True,
                        "stream_options": {"include_usage": True},
                        "max_tokens": args.max_tokens, "seed": args.seed + u,
                        "ignore_eos": True}
                try:
                    ttft, lat, answer, usage = await chat(args.host, args.port, body, args.timeout)
                except Exception as e:  # counted, and the conversation ends
                    errors.append(str(e))
                    break
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                results.append((ttft, lat, usage["completion_tokens"], usage["prompt_tokens"], cached))
                messages.append({"role": "assistant", "content": answer})

    t0 = time.perf_counter()
    await asyncio.gather(*(user_loop() for _ in range(args.concurrency)))
    wall = time.perf_counter() - t0
    if not results:
        print(f"RESULT name={args.name} requests=0 errors={len(errors)} first_error={errors[:1]}")
        return 1
    ttfts = sorted(r[0] * 1e3 for r in results)
    p = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))]
    prompt = sum(r[3] for r in results)
    print(f"RESULT name={args.name} requests={len(results)} errors={len(errors)} "
          f"ttft_mean_ms={statistics.fmean(ttfts):.1f} ttft_p50_ms={p(0.5):.1f} "
          f"ttft_p90_ms={p(0.9):.1f} "
          f"latency_mean_ms={statistics.fmean(r[1] for r in results) * 1e3:.1f} "
          f"throughput_rps={len(results) / wall:.2f} "
          f"tokens_per_s={sum(r[2] for r in results) / wall:.1f} "
          f"cached_fraction={sum(r[4] for r in results) / max(prompt, 1):.3f} "
          f"prompt_tokens={prompt} duration_s={wall:.1f}")
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
    ap.add_argument("--systems", type=int, default=8, help="shared system prompts")
    ap.add_argument("--system-words", type=int, default=900)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--question-words", type=int, default=30)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=120.0)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
