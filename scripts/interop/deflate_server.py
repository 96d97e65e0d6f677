"""Echo server with permessage-deflate, built on Python's `websockets` (a peer nobody here
wrote), for the compression interop test.

Prints `READY <port>`, echoes every message, and writes its counts to --stats every 200 ms:
connections, connections that agreed permessage-deflate (and its parameters), messages
echoed. `--no-context-takeover` makes the server ask for (and use) no context takeover both
ways; otherwise both sides keep their windows. Stops after --seconds.
"""
import argparse
import asyncio
import json
import os

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

counts = {"connections": 0, "deflate_connections": 0, "messages": 0, "params": {}}


async def echo(ws):
    counts["connections"] += 1
    ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    if ext.startswith("permessage-deflate"):
        counts["deflate_connections"] += 1
        counts["params"][ext] = counts["params"].get(ext, 0) + 1
    async for msg in ws:
        counts["messages"] += 1
        await ws.send(msg)


async def write_stats(path):
    while True:
        with open(path + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(path + ".tmp", path)
        await asyncio.sleep(0.2)


async def main(a) -> None:
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=a.no_context_takeover,
        client_no_context_takeover=a.no_context_takeover,
        server_max_window_bits=None,
        client_max_window_bits=None,
    )
    async with serve(
        echo, "127.0.0.1", 0, max_queue=64, ping_interval=None, backlog=4096,
        extensions=[factory], compression=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        stats = asyncio.create_task(write_stats(a.stats))
        await asyncio.sleep(a.seconds)
        stats.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--stats", required=True)
    p.add_argument("--no-context-takeover", action="store_true")
    asyncio.run(main(p.parse_args()))
