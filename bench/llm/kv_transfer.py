#!/usr/bin/env python3
"""KV transfer throughput, PrefillWorker -> decode Worker, against loopback TCP.

Standard library only; run by bench/llm/disagg.sh against a served
disagg graph whose simulated engines make each KV block BLOCK_BYTES long and
prefill in next to no time. It sends TRANSFERS long prompts one at a time
(each led by its own number, so the decode worker holds none of it and
every block moves), two tokens each (so the decode worker needs the KV),
then reads from the workers' /metrics (health ports HEALTH..HEALTH+7) the
PrefillWorker's dynamo_disagg_kv_transfer_bytes_total and divides it by
three sums of seconds: the decode Worker's dynamo_disagg_kv_receive_seconds
(from the KV header's arrival to that of the last byte: the transfer as the
receiver sees it, the headline), the PrefillWorker's
dynamo_disagg_kv_transfer_seconds (from the first token to the last byte
queued on the connection, up to four chunks before they are written), and
the decode Worker's dynamo_disagg_kv_transfer_seconds (from its prefill
request: the prefill and the export included).

The baseline, in the same run: a receiver process and a sender moving the
same bytes as each transfer right after it (so that load from other
processes of the machine hits both alike) over a 127.0.0.1 TCP connection
of its own, in 1 MiB send() calls (the request plane's chunk size), timed
from the first byte sent to the receiver's one-byte acknowledgement of the
last. (A C sender and receiver with 1 or 4 MiB writes was no faster on
this machine, so the Python one is not the weaker baseline.) Prints the
rates in MB/s (10^6 bytes) and the ratios to TCP, per round and the median.

    python3 kv_transfer.py --port 18600 --health 18610 --transfers 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import socket
import statistics
import sys
import time
import urllib.request

CHUNK = 1 << 20
# The bytes the PrefillWorker sent; the decode Worker's receiving seconds
# (header to last byte); the PrefillWorker's (first token to last byte
# queued); the decode Worker's from its prefill request to the last byte.
SERIES = (("dynamo_disagg_kv_transfer_bytes_total", "PrefillWorker"),
          ("dynamo_disagg_kv_receive_seconds_sum", "Worker"),
          ("dynamo_disagg_kv_transfer_seconds_sum", "PrefillWorker"),
          ("dynamo_disagg_kv_transfer_seconds_sum", "Worker"))
WORDS = ("alpha beta gamma delta river stone cloud paper light green "
         "north table music water field quick order story").split()  # ~3.5 tokens each


def scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def metric(health: int, name: str, component: str) -> float:
    """name summed over component's series on every health port."""
    total = 0.0
    pat = re.compile(rf'^{re.escape(name)}\{{[^}}]*component="{component}"[^}}]*\}} (\S+)$', re.M)
    for port in range(health, health + 8):
        total += sum(float(v) for v in pat.findall(scrape(port)))
    return total


def receiver(listener: socket.socket) -> None:
    """Each connection: an 8-byte count, that many bytes, a one-byte ack."""
    buf = bytearray(CHUNK)
    while True:
        conn, _ = listener.accept()
        with conn:
            head = conn.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return  # the sender is done
            n_bytes, got = int.from_bytes(head, "little"), 0
            while got < n_bytes:
                n = conn.recv_into(buf)
                if not n:
                    raise SystemExit("receiver: connection closed early")
                got += n
            conn.sendall(b"k")


class Loopback:
    """A receiver process on 127.0.0.1; send(n) times moving n bytes to it."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.proc = multiprocessing.Process(target=receiver, args=(self.listener,))
        self.proc.start()
        self.data = memoryview(bytes(CHUNK))

    def send(self, n_bytes: int) -> float:
        with socket.create_connection(self.listener.getsockname()) as s:
            s.sendall(n_bytes.to_bytes(8, "little"))
            t0 = time.perf_counter()
            sent = 0
            while sent < n_bytes:
                s.sendall(self.data[:min(CHUNK, n_bytes - sent)])
                sent += min(CHUNK, n_bytes - sent)
            if s.recv(1) != b"k":
                raise SystemExit("loopback: no acknowledgement")
            return time.perf_counter() - t0

    def close(self) -> None:
        socket.create_connection(self.listener.getsockname()).close()
        self.proc.join()
        self.listener.close()


def complete(port: int, prompt: str) -> dict:
    body = json.dumps({"model": "dynamo-sim", "prompt": prompt, "max_tokens": 2,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=120).read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="the Frontend's")
    ap.add_argument("--health", type=int, required=True, help="the first health port")
    ap.add_argument("--transfers", type=int, default=8, help="per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--words", type=int, default=1700, help="words per prompt (about 6,000 tokens)")
    ap.add_argument("--block-bytes", type=int, required=True, help="kv-bytes-per-block (for the table)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    rows, tokens = [], 0
    tcp_link = Loopback()
    for rnd in range(args.rounds):
        before = [metric(args.health, n, c) for n, c in SERIES]
        tcp = 0.0
        for j in range(args.transfers):
            sent_before = metric(args.health, *SERIES[0])
            prompt = f"transfer {rnd}.{j}: " + " ".join(rng.choice(WORDS) for _ in range(args.words))
            # The decode worker's counters are final when the answer is: its
            # second token needs all of the KV.
            tokens += complete(args.port, prompt)["usage"]["prompt_tokens"]
            moved = int(metric(args.health, *SERIES[0]) - sent_before)
            if moved <= 0:
                print("kv_transfer: no KV transfer counted on the PrefillWorker's /metrics",
                      file=sys.stderr)
                return 1
            tcp += tcp_link.send(moved)  # right after, so load from others hits both alike
        n_bytes, recv_secs, sent_secs, e2e_secs = (metric(args.health, n, c) - b
                                                   for (n, c), b in zip(SERIES, before))
        if min(recv_secs, sent_secs, e2e_secs) <= 0:
            print("kv_transfer: no KV transfer seconds on the workers' /metrics", file=sys.stderr)
            return 1
        rows.append((n_bytes / recv_secs / 1e6, n_bytes / sent_secs / 1e6,
                     n_bytes / e2e_secs / 1e6, n_bytes / tcp / 1e6, int(n_bytes // args.transfers)))
    tcp_link.close()
    per = rows[0][-1]
    print(f"\n{args.rounds} rounds of {args.transfers} transfers of {per / 2**20:.1f} MiB "
          f"({tokens // (args.rounds * args.transfers)} prompt tokens, "
          f"{args.block_bytes // 1024} KiB per 16-token block), one at a time, each "
          f"followed by the same bytes over loopback TCP\n")
    print("| round | KV received MB/s (decode: header to last byte) | KV sent MB/s (prefill: "
          "first token to last byte queued) | decode: prefill request to last byte "
          "| loopback TCP MB/s | received / TCP | sent / TCP |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for i, (recv, sent, e2e, tcp, _) in enumerate(rows, 1):
        print(f"| {i} | {recv:.0f} | {sent:.0f} | {e2e:.0f} | {tcp:.0f} | {recv / tcp:.2f}x "
              f"| {sent / tcp:.2f}x |")
    med = statistics.median(r[0] / r[3] for r in rows)
    med_sent = statistics.median(r[1] / r[3] for r in rows)
    print(f"\nKV transfer / loopback TCP, median of rounds: received {med:.2f}x, "
          f"sent {med_sent:.2f}x (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
