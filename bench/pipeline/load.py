#!/usr/bin/env python3
"""Closed-loop HTTP/1.1 load generator for the 3-hop pipeline benchmark.

Standard library only (asyncio protocols over plain TCP sockets), so no
framework's client library sits on the client side of any measurement, and
the same client is used for every framework.

C connections (keep-alive, one request in flight on each) send
POST PATH with a JSON body, read the response to its end (chunked,
Content-Length, or until the server closes) and send the next one at once.
The first WARMUP seconds are not counted; then for DURATION seconds every
response that completes is counted and its latency (request written ->
last byte of the response read) recorded.

A response counts as an error when the status is not 200, the connection
fails or times out, or the body does not contain every --expect string
(default "Frontend: Middle: Backend: hello"; run.sh passes both complete
SSE events, so a framework that merges or drops messages fails the check).

    python3 load.py --port 8000 --name dynamo-python -c 16 -d 10
    python3 load.py --port 8000 --check      # one request; exit 0 if it is right

Prints one line:

    RESULT name=N rps=X p50_ms=X p99_ms=X errors=N requests=N concurrency=C
           duration_s=D client_cpu=F

client_cpu is this process's CPU time over the measured wall time (1.0 = one
core busy): on a small machine it shows how much of the CPU the load
generator itself takes from the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time


class ProtocolError(Exception):
    pass


class HTTPConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.state = "head"  # head, chunk_size, chunk_data, length, eof, done
        self.status = 0
        self.body = bytearray()
        self.remaining = 0
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            if self._parse():
                self.waiter.set_result(None)
        except ProtocolError as e:
            self.waiter.set_exception(e)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.state == "eof":
                self.body += self.buf
                self.buf.clear()
                self.state = "done"
                self.keep_alive = False
                self.waiter.set_result(None)
            else:
                self.waiter.set_exception(ProtocolError(f"connection closed in state {self.state}"))

    # parsing; returns True when the response is complete
    def _parse(self) -> bool:
        buf = self.buf
        while True:
            st = self.state
            if st == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return False
                head = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                parts = head[0].split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                    raise ProtocolError(f"bad status line {head[0]!r}")
                self.status = int(parts[1])
                headers = {}
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip().lower()
                conn = headers.get("connection", "")
                self.keep_alive = "close" not in conn and (parts[0] != "HTTP/1.0" or "keep-alive" in conn)
                if 100 <= self.status < 200:
                    continue  # interim response (100 Continue): next head
                if "chunked" in headers.get("transfer-encoding", ""):
                    self.state = "chunk_size"
                elif "content-length" in headers:
                    self.remaining = int(headers["content-length"])
                    self.state = "length"
                elif self.status in (204, 304):
                    self.state = "done"
                else:
                    self.state = "eof"
                    self.keep_alive = False
            elif st == "chunk_size":
                end = buf.find(b"\r\n")
                if end < 0:
                    return False
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {line!r}") from None
                if size == 0:
                    self.state = "trailers"
                else:
                    self.remaining = size + 2  # data + CRLF
                    self.state = "chunk_data"
            elif st == "chunk_data":
                if len(buf) < self.remaining:
                    return False
                self.body += buf[: self.remaining - 2]
                del buf[: self.remaining]
                self.state = "chunk_size"
            elif st == "trailers":
                end = buf.find(b"\r\n")
                if end < 0:
                    return False
                del buf[: end + 2]
                if end == 0:
                    self.state = "done"
            elif st == "length":
                n = min(len(buf), self.remaining)
                self.body += buf[:n]
                del buf[:n]
                self.remaining -= n
                if self.remaining:
                    return False
                self.state = "done"
            elif st == "eof":
                self.body += buf
                buf.clear()
                return False
            elif st == "done":
                return True

    async def request(self, raw: bytes, timeout: float) -> tuple[int, bytes]:
        self._reset()
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.transport.write(raw)
        if self.buf:  # bytes that arrived early (should not happen)
            self.data_received(b"")
        await asyncio.wait_for(self.waiter, timeout)
        return self.status, bytes(self.body)


async def connect(host: str, port: int) -> HTTPConn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HTTPConn, host, port)
    return proto


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: */*\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode() + body


async def worker(args, raw: bytes, expect: list, t_start: float, t_end: float, lat: list, errs: list, stats: dict) -> None:
    conn: HTTPConn | None = None
    clock = time.perf_counter
    while True:
        t0 = clock()
        if t0 >= t_end:
            break
        try:
            if conn is None or conn.closed:
                conn = await asyncio.wait_for(connect(args.host, args.port), args.timeout)
                stats["connects"] += 1
            status, body = await conn.request(raw, args.timeout)
            t1 = clock()
            ok = status == 200 and all(e in body for e in expect)
            if not conn.keep_alive:
                conn.transport.close()
                conn = None
        except (OSError, asyncio.TimeoutError, ProtocolError) as e:
            t1 = clock()
            ok = False
            status, body = 0, repr(e).encode()
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            conn = None
            await asyncio.sleep(0.01)
        if t_start <= t0 and t1 <= t_end:
            if ok:
                lat.append(t1 - t0)
            else:
                errs.append((status, body[:200]))
        elif t1 <= t_end and not ok:
            stats["warmup_errors"] += 1
    if conn is not None and conn.transport is not None:
        conn.transport.close()


def pct(sorted_vals: list, p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def run(args) -> int:
    body = json.dumps({args.field: args.text}).encode()
    raw = build_request(args.host, args.port, args.path, body)
    expect = [e.encode() for e in (args.expect or ["Frontend: Middle: Backend: hello"])]

    if args.check:
        try:
            conn = await asyncio.wait_for(connect(args.host, args.port), args.timeout)
            status, resp = await conn.request(raw, args.timeout)
            conn.transport.close()
        except (OSError, asyncio.TimeoutError, ProtocolError) as e:
            print(f"check: {e!r}", file=sys.stderr)
            return 1
        if args.verbose:
            sys.stdout.write(resp.decode("utf-8", "replace"))
        if status != 200 or not all(e in resp for e in expect):
            print(f"check: status {status}, body {resp[:300]!r}", file=sys.stderr)
            return 1
        return 0

    now = time.perf_counter()
    t_start = now + args.warmup
    t_end = t_start + args.duration
    lat: list = []
    errs: list = []
    stats = {"connects": 0, "warmup_errors": 0}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [asyncio.create_task(worker(args, raw, expect, t_start, t_end, lat, errs, stats)) for _ in range(args.concurrency)]
    await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    ru2 = resource.getrusage(resource.RUSAGE_SELF)
    # Responses still in flight at t_end finish (or time out) and are dropped.
    await asyncio.wait(tasks, timeout=args.timeout + 1)
    for t in tasks:
        t.cancel()
    cpu = (ru2.ru_utime + ru2.ru_stime) - (ru1.ru_utime + ru1.ru_stime)
    lat.sort()
    n = len(lat)
    rps = n / args.duration
    p50 = pct(lat, 50) * 1e3
    p99 = pct(lat, 99) * 1e3
    if errs:
        print(f"load: {len(errs)} errors, first: status {errs[0][0]} {errs[0][1]!r}", file=sys.stderr)
    print(
        f"RESULT name={args.name} rps={rps:.1f} p50_ms={p50:.3f} p99_ms={p99:.3f} errors={len(errs)} "
        f"requests={n} concurrency={args.concurrency} duration_s={args.duration:g} "
        f"client_cpu={cpu / args.duration:.2f} connects={stats['connects']} warmup_errors={stats['warmup_errors']}",
        flush=True,
    )
    return 0 if n > 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/generate")
    ap.add_argument("--field", default="text", help="JSON field of the request body")
    ap.add_argument("--text", default="hello world", help="request text")
    ap.add_argument("--expect", action="append", default=None,
                    help='substring every response body must contain; repeatable, all must appear '
                    '(default: "Frontend: Middle: Backend: hello")')
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("-w", "--warmup", type=float, default=3.0, help="seconds before measuring")
    ap.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    ap.add_argument("--name", default="target")
    ap.add_argument("--check", action="store_true", help="send one request; exit 0 when it is right")
    ap.add_argument("-v", "--verbose", action="store_true", help="with --check: print the body")
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
