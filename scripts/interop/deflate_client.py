"""Clients with permessage-deflate, built on Python's `websockets` (a peer nobody here
wrote), against the built-in gateway's `serve --compression` (the gateway-side interop test).

Opens --connections connections at once, each offering permessage-deflate (with or without
context takeover: --no-context-takeover), sends --messages text messages (a ~1 KiB JSON
payload made distinct by its index) and one binary one, one at a time, and checks that each
echo is the very message sent. Prints one JSON line of counts: connections, connections whose
101 agreed permessage-deflate (by answer), messages sent, echoes matched, mismatched, errors.
"""
import argparse
import asyncio
import json

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

counts = {"connections": 0, "answers": {}, "sent": 0, "matched": 0, "mismatched": 0,
          "errors": []}


def payload(conn: int, i: int) -> str:
    row = '{"id":%d,"conn":%d,"name":"sockstorm","ok":true},' % (i, conn)
    return "[" + (row * (1000 // len(row))) + "{}]"


async def client(url: str, conn: int, messages: int, no_takeover: bool) -> None:
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=no_takeover,
        client_no_context_takeover=no_takeover,
        server_max_window_bits=None,
        client_max_window_bits=True,
    )
    try:
        async with connect(url, extensions=[factory], compression=None, max_size=2**20,
                           ping_interval=None, open_timeout=30) as ws:
            counts["connections"] += 1
            answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            counts["answers"][answer] = counts["answers"].get(answer, 0) + 1
            batch = [payload(conn, i) for i in range(messages)]
            batch.append(("binary %d " % conn).encode() * 64)
            for msg in batch:
                await ws.send(msg)
                counts["sent"] += 1
                echo = await asyncio.wait_for(ws.recv(), 10)
                if echo == msg:
                    counts["matched"] += 1
                else:
                    counts["mismatched"] += 1
    except Exception as e:  # counted, and shown: the check fails on any
        counts["errors"].append(f"{type(e).__name__}: {e}"[:200])


async def main(a) -> None:
    await asyncio.gather(*(client(a.url, c, a.messages, a.no_context_takeover)
                           for c in range(a.connections)))
    print(json.dumps(counts))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--no-context-takeover", action="store_true")
    asyncio.run(main(p.parse_args()))
