"""Socket.IO server built on python-socketio's AsyncServer over aiohttp (a peer nobody here
wrote), for the Socket.IO interop test. Engine.IO v4, WebSocket transport straight away:
clients open ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket, no polling first.

Prints `READY <port>`, and writes its counts to --stats every 200 ms. Stops after --seconds.

Namespace /chat (any auth accepted):
  echo DATA       -> emits `echo` DATA back to the sender, then acks {"ok": true} (the ack
                     only goes out when the client's event carried an id)
  subscribe       -> joins room "subscribers", acks {"ok": true}
  publish DATA    -> emits `message` DATA to every member of room "subscribers" (the sender
                     too when it subscribed), acks {"ok": true}
  bye             -> the server disconnects the sender from /chat (sends `41/chat,`; the
                     Engine.IO session and the WebSocket stay open)
  drop            -> the server ends the sender's whole Engine.IO session (sends `1`; its
                     WebSocket close follows pingInterval + pingTimeout later unless the
                     client closes first)
  every --tick-ms -> emits `tick` {"seq": n, "ts": unix ms} to everyone in /chat
                     (--tick-ms 0: no ticks)

Stats: connections (Engine.IO sessions), namespace_connects (/chat), echoes,
acks_requested (events in /chat that carried an ack id), ticks (tick emits),
ticks_sent (tick emits x receivers), subscribes, publishes, deliveries (publish emits x
room members), disconnects {reason: n} (/chat, python-socketio's reason strings),
events_not_connected (events for a namespace the client has not connected: dropped,
nothing is sent back), pings_sent / pongs_received (Engine.IO `2` / `3`; python-engineio
has no public hook, so AsyncSocket.send/receive are wrapped here).
"""
import argparse
import asyncio
import json
import os
import time

import socketio
from aiohttp import web
from engineio import async_socket
from engineio import packet as eio_packet

NS = "/chat"
counts = {
    "connections": 0, "namespace_connects": 0, "echoes": 0, "acks_requested": 0,
    "ticks": 0, "ticks_sent": 0, "subscribes": 0, "publishes": 0, "deliveries": 0,
    "disconnects": {}, "events_not_connected": 0, "pings_sent": 0, "pongs_received": 0,
}
chat = set()  # sids connected to /chat
subscribers = set()  # sids in room "subscribers"

# python-engineio exposes no ping/pong hook: count the packets where the socket sends and
# receives them (private API of the pinned python-engineio 4.15.1).
_send, _receive = async_socket.AsyncSocket.send, async_socket.AsyncSocket.receive


async def counted_send(self, pkt):
    if pkt.packet_type == eio_packet.PING:
        counts["pings_sent"] += 1
    return await _send(self, pkt)


async def counted_receive(self, pkt):
    if pkt.packet_type == eio_packet.PONG:
        counts["pongs_received"] += 1
    return await _receive(self, pkt)


async_socket.AsyncSocket.send = counted_send
async_socket.AsyncSocket.receive = counted_receive


class CountingServer(socketio.AsyncServer):
    """Counts Engine.IO sessions, ack ids and events for unconnected namespaces, which the
    public handlers cannot see (private API of the pinned python-socketio 5.18.1)."""

    async def _handle_eio_connect(self, eio_sid, environ):
        counts["connections"] += 1
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_event(self, eio_sid, namespace, id, data):
        ns = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, ns)
        if not self.manager.is_connected(sid, ns):
            counts["events_not_connected"] += 1
        elif ns == NS and id is not None:
            counts["acks_requested"] += 1
        return await super()._handle_event(eio_sid, namespace, id, data)


def make_server(a):
    sio = CountingServer(
        async_mode="aiohttp",
        transports=a.transports.split(","),
        ping_interval=a.ping_interval,
        ping_timeout=a.ping_timeout,
        # An Origin header other than the server's own is refused (HTTP 400) by default.
        cors_allowed_origins="*",
        logger=False, engineio_logger=False,
    )

    @sio.on("connect", namespace=NS)
    async def connect(sid, environ, auth=None):
        counts["namespace_connects"] += 1
        chat.add(sid)
        return True

    @sio.on("disconnect", namespace=NS)
    async def disconnect(sid, reason):
        d = counts["disconnects"]
        d[reason] = d.get(reason, 0) + 1
        chat.discard(sid)
        subscribers.discard(sid)

    @sio.on("echo", namespace=NS)
    async def echo(sid, data=None, *_rest):
        counts["echoes"] += 1
        await sio.emit("echo", data, to=sid, namespace=NS)
        return {"ok": True}

    @sio.on("subscribe", namespace=NS)
    async def subscribe(sid, *_args):
        counts["subscribes"] += 1
        await sio.enter_room(sid, "subscribers", namespace=NS)
        subscribers.add(sid)
        return {"ok": True}

    @sio.on("publish", namespace=NS)
    async def publish(sid, data=None, *_rest):
        counts["publishes"] += 1
        counts["deliveries"] += len(subscribers)
        await sio.emit("message", data, room="subscribers", namespace=NS)
        return {"ok": True}

    @sio.on("bye", namespace=NS)
    async def bye(sid, *_args):
        await sio.disconnect(sid, namespace=NS)

    @sio.on("drop", namespace=NS)
    async def drop(sid, *_args):
        await sio.eio.disconnect(sio.manager.eio_sid_from_sid(sid, NS))

    return sio


async def ticker(sio, tick_ms):
    seq = 0
    while True:
        await asyncio.sleep(tick_ms / 1000)
        seq += 1
        counts["ticks"] += 1
        counts["ticks_sent"] += len(chat)
        await sio.emit("tick", {"seq": seq, "ts": int(time.time() * 1000)}, namespace=NS)


def dump(path):
    with open(path + ".tmp", "w") as f:
        json.dump(counts, f)
    os.replace(path + ".tmp", path)


async def write_stats(path):
    while True:
        dump(path)
        await asyncio.sleep(0.2)


async def main(a) -> None:
    sio = make_server(a)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    tasks = [asyncio.create_task(write_stats(a.stats))]
    if a.tick_ms > 0:
        tasks.append(asyncio.create_task(ticker(sio, a.tick_ms)))
    await asyncio.sleep(a.seconds)
    for t in tasks:
        t.cancel()
    dump(a.stats)
    # Open WebSockets would hold aiohttp's cleanup for its 60 s shutdown timeout: exit now.
    os._exit(0)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--stats", required=True)
    p.add_argument("--tick-ms", type=float, default=1000.0)
    # Whole seconds: the open packet says int(ping_interval) * 1000.
    p.add_argument("--ping-interval", type=int, default=5)
    p.add_argument("--ping-timeout", type=float, default=5.0)
    # websocket (default) or polling,websocket: either way a client may open the
    # WebSocket transport directly; with polling allowed, polling clients may upgrade.
    p.add_argument("--transports", default="websocket")
    asyncio.run(main(p.parse_args()))
