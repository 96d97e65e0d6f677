"""Echo server built on Python's `websockets` (a peer nobody here wrote), for interop tests.

Prints `READY <port>` once listening on 127.0.0.1, then echoes every message until killed or
until --seconds elapse (so a forgotten server never outlives the test).
"""
import argparse
import asyncio

import websockets


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


async def main(seconds: float) -> None:
    async with websockets.serve(echo, "127.0.0.1", 0, max_queue=64, ping_interval=None, backlog=4096) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await asyncio.sleep(seconds)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=120.0)
    asyncio.run(main(p.parse_args().seconds))
