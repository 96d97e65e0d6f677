"""Checks a whole run over an application protocol against the peer's own counts.

Usage: check_protocols.py (socketio|stomp|graphql) RESULT.json PEER_STATS.json CONNECTIONS [ARG]

socketio: python-socketio's /chat namespace: every connection joined, every emit echoed
  and acked (the server's echo and ack counts are ours), every Engine.IO ping answered,
  every tick the server emitted received, and no disconnect but our own.
stomp: RabbitMQ web-stomp fan-out: every SEND received by the broker, every MESSAGE the
  broker delivered received and owed (loss 0), every receipt back, subscriptions acked by
  their receipts, heart-beats kept. ARG: subscriber connections.
graphql: graphql-ws: every subscription's `next`s (ARG per subscription) and its complete,
  every operation answered, every ping of ours ponged and every ping of the server's
  answered.
"""
import json
import sys

mode, doc, peer, n = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), int(sys.argv[4])
arg = int(sys.argv[5]) if len(sys.argv) > 5 else 0
c = doc["counters"]


def eq(name, got, want):
    assert got == want, f"{mode}: {name}: {got} != {want}"


eq("failures", doc["failures"], {})
eq("established", c["established"], n)
eq("sessions_dropped", c["sessions_dropped"], 0)
eq("closed_clean", c["closed_clean"], n)
eq("protocol", doc["settings"]["protocol"], {"graphql": "graphql-ws"}.get(mode, mode))
eq("app_connect count", doc["histograms"]["app_connect"]["count"], n)

if mode == "socketio":
    eq("namespace connects", peer["namespace_connects"], n)
    sent = c["msgs_sent"]
    assert sent > 0, c
    eq("echoes matched", c["msgs_received"], sent)
    eq("server echoes", peer["echoes"], sent)
    eq("acks asked", c["app_acks_requested"], sent)
    eq("server saw ack ids", peer["acks_requested"], sent)
    eq("acks received", c["app_acks_received"], sent)
    eq("ticks received", c["msgs_pushed"], peer["ticks_sent"])
    assert c["app_heartbeats_received"] >= n * 5, ("pings over 30 s at 5 s", c["app_heartbeats_received"])
    # Every ping we received was answered. A ping the server sends as our close crosses it
    # is counted by the server but never read by us (at most one per connection), and so is
    # the pong to a ping read just before our close went out.
    eq("pongs sent = pings received", c["app_heartbeats_sent"], c["app_heartbeats_received"])
    assert peer["pings_sent"] - n <= c["app_heartbeats_received"] <= peer["pings_sent"], (c["app_heartbeats_received"], peer["pings_sent"])
    assert c["app_heartbeats_sent"] - n <= peer["pongs_received"] <= c["app_heartbeats_sent"], (peer["pongs_received"], c["app_heartbeats_sent"])
    eq("server disconnect reasons", peer["disconnects"], {"client disconnect": n})
    print(f"   socketio: {n} joined /chat; {sent} emits echoed and acked (app_ack p99 "
          f"{doc['histograms']['app_ack']['p99_us']} µs); {c['msgs_pushed']} ticks; "
          f"{c['app_heartbeats_received']} pings answered; disconnects {peer['disconnects']}")
elif mode == "stomp":
    f = doc["fanout"]
    pub = c["fanout_published"]
    assert pub > 0, c
    eq("broker received SENDs", peer["amqp091"]["messages_received_total"], pub)
    eq("receipts asked", c["app_acks_requested"], pub)
    eq("receipts received", c["app_acks_received"], pub)
    delivered = peer["classic_queue"]["messages_delivered_total"]
    eq("MESSAGEs received", c["fanout_delivered"], delivered)
    eq("owed", c["fanout_owed"], c["fanout_delivered_owed"])
    eq("lost", c["fanout_lost"], 0)
    eq("duplicates", c["fanout_duplicates"], 0)
    eq("subscriptions acked by receipt", c["expects_met"], arg)
    assert c["app_heartbeats_sent"] > 0 and c["app_heartbeats_received"] > 0, c
    print(f"   stomp: {pub} SENDs (receipts p99 {doc['histograms']['app_ack']['p99_us']} µs) "
          f"→ {delivered} MESSAGEs delivered by the broker = {c['fanout_delivered']} received, "
          f"{c['fanout_owed']} owed, 0 lost; heart-beats {c['app_heartbeats_sent']} sent, "
          f"{c['app_heartbeats_received']} received")
elif mode == "graphql":
    eq("subscriptions", peer["subscriptions"], n)
    eq("subscription nexts", c["msgs_pushed"], n * arg)
    sent = c["msgs_sent"]
    assert sent > 0, c
    eq("operations answered", c["msgs_received"], sent)
    eq("server queries", peer["queries"], sent)
    eq("nexts", c["graphql_next"], peer["nexts"])
    eq("nexts = subscriptions' + operations'", c["graphql_next"], n * arg + sent)
    eq("completes", c["graphql_complete"], peer["completes"])
    eq("completes = subscriptions + operations", c["graphql_complete"], n + sent)
    eq("our pings answered", c["heartbeats_answered"], c["heartbeats_sent"])
    eq("server saw our pings", peer["client_pings"], c["heartbeats_sent"])
    eq("server pings received", c["app_heartbeats_received"], peer["server_pings"])
    eq("server pongs", peer["pongs"], c["app_heartbeats_sent"])
    assert c["app_heartbeats_received"] > 0 and c["heartbeats_sent"] > 0, c
    print(f"   graphql-ws: {n} subscriptions × {arg} nexts and complete; {sent} operations "
          f"answered (p99 {doc['histograms']['ws_msg_rtt']['p99_us']} µs); pings "
          f"{c['heartbeats_sent']} ours, {c['app_heartbeats_received']} the server's, all answered")
else:
    raise SystemExit(f"unknown mode {mode}")
