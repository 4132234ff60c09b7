#!/usr/bin/env python3
"""OpenAI-API load generator for serving benchmarks (bench/llm/llama.sh).

One client for every server: it speaks only POST /v1/chat/completions,
streamed, so dynamo's Frontend and llama.cpp's llama-server see the same
requests, byte for byte, in the same order. Every request is greedy
(temperature 0) with ignore_eos and max_tokens, so both servers generate
the same number of tokens whatever the model says.

Workloads (the same --seed gives the same prompts):
  unique  REQUESTS requests, each with its own system prompt (it starts
          with the request's number) and question: no two share a block of
          prompt tokens, so no prefix cache can help.
  chat    USERS users in one group sharing a long system prompt, each
          holding a conversation of TURNS turns; every turn resends the
          system prompt, the history (with the answers as streamed) and a
          new question. Requests share a long prefix with earlier ones: the
          system prompt with every user, the previous turn with their own.

CONCURRENCY requests are in flight at a time (closed loop; a chat user's
next turn is queued when the previous answer ends). Measured on the
client, per request: TTFT (request sent -> first chunk whose delta has
content), end-to-end latency, time per output token after the first
((latency - TTFT) / (tokens - 1)); tokens and cached prompt tokens from the
usage the server reports (stream_options.include_usage; when a server sends
no usage, the content chunks are counted). Prints one line:

  RESULT name=N workload=W concurrency=C requests=R errors=E out_tokens=T
         duration_s=D out_tok_s=X ttft_mean_ms=X ttft_p50_ms=X ttft_p90_ms=X
         tpot_mean_ms=X tpot_p50_ms=X latency_mean_ms=X prompt_tokens=P
         cached_tokens=K

(cached_tokens=-1 when the server reports none.) Needs aiohttp
(bench/llm/setup.sh puts it in bench/.venv-llm).

  openai_load.py --url http://127.0.0.1:8000 --name dynamo --workload chat --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

import aiohttp

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "up more out who what can said about do into them some could him time only my than then its "
         "new also two may after like other first any these our such over most where system policy "
         "customer order account billing support product service answer question request detail "
         "please guide refund delivery warranty schedule report").split()


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


class Stats:
    def __init__(self):
        self.ttft, self.tpot, self.latency = [], [], []
        self.out_tokens = self.prompt_tokens = self.cached = 0
        self.cached_reported = False
        self.errors = 0
        self.first_error = ""


async def chat(session: aiohttp.ClientSession, args, messages: list, stats: Stats) -> str:
    """Streams one chat completion; records it in stats; returns its text."""
    body = {"model": args.model, "messages": messages, "max_tokens": args.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = None
    parts, chunks, usage = [], 0, None
    try:
        async with session.post(args.url + "/v1/chat/completions", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                ev = json.loads(data)
                if ev.get("usage"):
                    usage = ev["usage"]
                for choice in ev.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        parts.append(piece)
                        chunks += 1
    except Exception as e:  # noqa: BLE001 - any failure is counted and reported
        stats.errors += 1
        stats.first_error = stats.first_error or f"{type(e).__name__}: {e}"
        return ""
    latency = time.perf_counter() - t0
    if ttft is None:
        stats.errors += 1
        stats.first_error = stats.first_error or "a stream ended without content"
        return ""
    n = chunks
    if usage:
        n = usage.get("completion_tokens", n)
        stats.prompt_tokens += usage.get("prompt_tokens", 0)
        details = usage.get("prompt_tokens_details") or {}
        if "cached_tokens" in details:
            stats.cached_reported = True
            stats.cached += details["cached_tokens"]
    stats.out_tokens += n
    stats.ttft.append(ttft)
    stats.latency.append(latency)
    if n > 1:
        stats.tpot.append((latency - ttft) / (n - 1))
    return "".join(parts)


def unique_jobs(args, rng: random.Random):
    """One job per request: a coroutine factory taking (session, stats)."""
    def job(i: int, system: str, question: str):
        async def run(session, stats):
            await chat(session, args, [{"role": "system", "content": system},
                                       {"role": "user", "content": question}], stats)
        return run
    return [job(i, f"Request {i} of run {args.seed}. " + text(rng, args.system_words // 4),
                text(rng, args.question_words) + "?")
            for i in range(args.requests)]


def chat_jobs(args, rng: random.Random):
    """One job per user: all its turns, one after the other."""
    system = f"You are the assistant of run {args.seed}. " + text(rng, args.system_words)

    def job(questions: list):
        async def run(session, stats):
            messages = [{"role": "system", "content": system}]
            for q in questions:
                messages.append({"role": "user", "content": q})
                answer = await chat(session, args, list(messages), stats)
                messages.append({"role": "assistant", "content": answer})
        return run
    return [job([text(rng, args.question_words) + "?" for _ in range(args.turns)])
            for _ in range(args.users)]


async def main_async(args) -> int:
    rng = random.Random(args.seed)
    jobs = unique_jobs(args, rng) if args.workload == "unique" else chat_jobs(args, rng)
    stats = Stats()
    queue: asyncio.Queue = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    # A new connection per request: llama-server closes some kept-alive
    # connections after a stream, and a request written to one that is
    # closing fails; a loopback connect costs far less than a token.
    conn = aiohttp.TCPConnector(limit=args.concurrency, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
        async def runner():
            while not queue.empty():
                j = queue.get_nowait()
                await j(session, stats)

        t0 = time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(args.concurrency)))
        duration = time.perf_counter() - t0

    def q(xs, p):
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    ms = 1000.0
    mean = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
    print(f"RESULT name={args.name} workload={args.workload} concurrency={args.concurrency} "
          f"requests={len(stats.ttft) + stats.errors} errors={stats.errors} "
          f"out_tokens={stats.out_tokens} duration_s={duration:.3f} "
          f"out_tok_s={stats.out_tokens / duration:.2f} "
          f"ttft_mean_ms={mean(stats.ttft) * ms:.1f} ttft_p50_ms={q(stats.ttft, 0.5) * ms:.1f} "
          f"ttft_p90_ms={q(stats.ttft, 0.9) * ms:.1f} tpot_mean_ms={mean(stats.tpot) * ms:.2f} "
          f"tpot_p50_ms={q(stats.tpot, 0.5) * ms:.2f} "
          f"latency_mean_ms={mean(stats.latency) * ms:.1f} prompt_tokens={stats.prompt_tokens} "
          f"cached_tokens={stats.cached if stats.cached_reported else -1}", flush=True)
    if stats.errors:
        print(f"{args.name}: {stats.errors} requests failed; the first: {stats.first_error}",
              file=sys.stderr)
    return 1 if stats.errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the server's base URL, http://HOST:PORT")
    ap.add_argument("--name", required=True, help="what the RESULT line calls this run")
    ap.add_argument("--workload", choices=("unique", "chat"), required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=16, help="unique: requests in all")
    ap.add_argument("--users", type=int, default=4, help="chat: users (conversations)")
    ap.add_argument("--turns", type=int, default=4, help="chat: turns per user")
    ap.add_argument("--system-words", type=int, default=240,
                    help="chat: words of the shared system prompt (unique: a quarter of it)")
    ap.add_argument("--question-words", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    args = ap.parse_args()
    if args.concurrency < 1 or args.requests < 1 or args.users < 1 or args.turns < 1:
        ap.error("--concurrency, --requests, --users and --turns must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
