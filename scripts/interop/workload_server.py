"""A WebSocket server built on Python's `websockets` (a peer nobody here wrote) that answers
the way the seed articles' gateways do, and counts what it did, for interop tests of
sockstorm's request/reply matching, stream gap accounting, per-connection URLs and provoked
keepalive closes.

- `{"action":"apply_operation","opId":X}` -> `{"type":"operation_applied","opId":X}`
- `{"action":"send_message","message":{"id":X}}` -> `{"type":"message_ack","id":X}`
- `{"op":"subscribe","streams":[S...]}` -> `{"op":"subscribed","streams":[...]}`, then per
  stream `{"type":"quote","stream":S,"seq":N,"price":P}` at --stream-rate, every
  --gap-every'th seq skipped
- anything else is echoed
- websockets' own keepalive (--ping-interval / --ping-timeout) closes a client that stops
  answering pings with 1011

Prints `READY <port>`, and rewrites --stats FILE (JSON) every 200 ms until --seconds elapse.
"""
import argparse
import asyncio
import json
import os
from urllib.parse import parse_qs, urlparse

import websockets

STATS = {
    "connections": 0,
    "client_ids": [],
    "acks": 0,
    "quotes": 0,
    "skipped": 0,
    "gaps_visible": 0,
    "close_codes": {},
    "close_codes_sent": {},
}


async def feed(ws, stream, rate, gap_every):
    seq = last_sent = 0
    while True:
        await asyncio.sleep(1.0 / rate)
        seq += 1
        if gap_every and seq % gap_every == 0:
            STATS["skipped"] += 1
            continue
        quote = {"type": "quote", "stream": stream, "seq": seq, "price": 100 + seq % 7}
        try:
            await ws.send(json.dumps(quote))
        except websockets.ConnectionClosed:
            return
        STATS["quotes"] += 1
        if last_sent and seq > last_sent + 1:
            STATS["gaps_visible"] += 1
        last_sent = seq


async def handler(ws, args):
    STATS["connections"] += 1
    query = parse_qs(urlparse(ws.path).query)
    STATS["client_ids"].append(query.get("clientId", [None])[0])
    feeds = []
    try:
        async for msg in ws:
            try:
                d = json.loads(msg)
            except ValueError:
                d = None
            if not isinstance(d, dict):
                await ws.send(msg)
            elif d.get("action") == "apply_operation":
                await ws.send(json.dumps({"type": "operation_applied", "opId": d.get("opId")}))
                STATS["acks"] += 1
            elif d.get("action") == "send_message":
                mid = (d.get("message") or {}).get("id")
                await ws.send(json.dumps({"type": "message_ack", "id": mid}))
                STATS["acks"] += 1
            elif d.get("op") == "subscribe":
                await ws.send(json.dumps({"op": "subscribed", "streams": d.get("streams")}))
                for s in d.get("streams") or []:
                    feeds.append(asyncio.create_task(feed(ws, s, args.stream_rate, args.gap_every)))
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    finally:
        for f in feeds:
            f.cancel()
        code = str(ws.close_code)
        STATS["close_codes"][code] = STATS["close_codes"].get(code, 0) + 1
        # What the server itself sent (1011 for a keepalive timeout: websockets then drops the
        # connection without waiting for the client's answer, so it records 1006 as received).
        sent = str(ws.close_sent.code) if ws.close_sent else "none"
        STATS["close_codes_sent"][sent] = STATS["close_codes_sent"].get(sent, 0) + 1


async def dump(path):
    while True:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(STATS, f)
        os.replace(tmp, path)
        await asyncio.sleep(0.2)


async def main(args) -> None:
    async with websockets.serve(
        lambda ws: handler(ws, args),
        "127.0.0.1",
        0,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        backlog=4096,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        task = asyncio.create_task(dump(args.stats))
        await asyncio.sleep(args.seconds)
        task.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--stats", required=True)
    p.add_argument("--stream-rate", type=float, default=20.0)
    p.add_argument("--gap-every", type=int, default=10)
    p.add_argument("--ping-interval", type=float, default=0.5)
    p.add_argument("--ping-timeout", type=float, default=0.5)
    asyncio.run(main(p.parse_args()))
