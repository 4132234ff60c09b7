"""A runtime-driven probe for tests/distributed, run inside a network
namespace: JSON commands on stdin, JSON events on stdout, one per line.

Every event carries "t", time.monotonic() (CLOCK_MONOTONIC: the same clock
in every process of the machine, whatever network namespace it is in), so
the test can time what happened here against what it did elsewhere.

Commands:
  {"op": "watch", "path": "ns/comp/ep"}
      -> {"ev": "instances", "path", "ids": [hex...]} now and on every change
  {"op": "call", "id": ID, "path", "body": {...}, "deadline_ms": 0,
   "route": "random"|"round_robin"}
      -> {"ev": "item", "id", "data"}..., then {"ev": "done", "id"}
         or {"ev": "error", "id", "status", "msg"}
  {"op": "subscribe", "subject"}  -> {"ev": "event", "subject", "data"}
  {"op": "publish", "id", "subject", "data"} -> {"ev": "published", "id", "ok", "msg"}
  {"op": "serve", "path"}  serves an echo endpoint
      -> {"ev": "registering", "instance"} just before, {"ev": "serving"}
  {"op": "exit"}
The backends come from the environment (ETCD_ENDPOINTS, NATS_SERVER or
DYN_CONTROL_SOCKET), as in any runtime.
"""

import asyncio
import json
import os
import sys
import time

from dynamo.runtime import DistributedRuntime, DynamoError


def emit(**ev):
    ev["t"] = time.monotonic()
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


async def main():
    rt = await DistributedRuntime.connect()
    emit(ev="ready", instance=f"{rt.instance_id:x}", pid=os.getpid())
    loop = asyncio.get_running_loop()
    clients = {}
    tasks = set()

    async def client(path):
        c = clients.get(path)
        if c is None:
            ns, comp, ep = path.split("/")
            c = await rt.namespace(ns).component(comp).endpoint(ep).client()
            clients[path] = c
        return c

    async def watch(path):
        c = await client(path)

        def changed():
            c._changed()  # wake wait_for_instances() waiters too
            emit(ev="instances", path=path, ids=[f"{i:x}" for i in c.instance_ids()])

        c._core.on_change = changed
        emit(ev="instances", path=path, ids=[f"{i:x}" for i in c.instance_ids()])

    async def call(cmd):
        cid = cmd.get("id")
        try:
            c = await client(cmd["path"])
            c.set_wait(int(cmd.get("wait_ms", 5000)))
            route = {"random": 0, "round_robin": 1}.get(cmd.get("route", "random"), 0)
            s = c.generate(json.dumps(cmd.get("body", {})).encode(), route=route,
                           deadline_ms=int(cmd.get("deadline_ms", 0)))
            async for item in s:
                emit(ev="item", id=cid, data=json.loads(item), instance=f"{s.instance_id:x}")
            emit(ev="done", id=cid)
        except DynamoError as e:
            emit(ev="error", id=cid, msg=str(e))
        except Exception as e:  # noqa: BLE001 - reported to the test
            emit(ev="error", id=cid, msg=f"{type(e).__name__}: {e}")

    def on_event(subject, data):
        emit(ev="event", subject=subject, data=data.decode(errors="replace"))

    async def echo(body):
        yield body

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "exit":
            break
        elif op == "watch":
            await watch(cmd["path"])
        elif op == "call":
            t = loop.create_task(call(cmd))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        elif op == "subscribe":
            rt.subscribe(cmd["subject"], on_event)
            emit(ev="subscribed", subject=cmd["subject"])
        elif op == "publish":
            try:
                rt.publish(cmd["subject"], cmd["data"].encode())
                emit(ev="published", id=cmd.get("id"), ok=True, msg="")
            except DynamoError as e:
                emit(ev="published", id=cmd.get("id"), ok=False, msg=str(e))
        elif op == "serve":
            ns, comp, ep = cmd["path"].split("/")
            endpoint = rt.namespace(ns).component(comp).endpoint(ep)
            emit(ev="registering", instance=f"{rt.instance_id:x}")
            await endpoint.serve_endpoint(echo)
            emit(ev="serving", instance=f"{rt.instance_id:x}")
        else:
            emit(ev="bad", op=op)
    for t in list(tasks):
        t.cancel()
    rt.close()


if __name__ == "__main__":
    asyncio.run(main())
