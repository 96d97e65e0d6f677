// Echo server with permessage-deflate, built on Node's `ws` (a peer nobody here wrote), for
// the compression interop test. Prints `READY <port>`, echoes every message, and writes its
// counts to --stats every 200 ms (connections, connections that agreed permessage-deflate
// with the answer, messages echoed). --no-context-takeover: no context takeover both ways.
// threshold 0: every message is compressed (ws leaves those under 1 KiB plain by default).
"use strict";
const fs = require("fs");
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const stats = opt("--stats");
const seconds = Number(opt("--seconds") || 90);
const noTakeover = args.includes("--no-context-takeover");
const counts = { connections: 0, deflate_connections: 0, messages: 0, params: {} };

const wss = new WebSocketServer({
  host: "127.0.0.1", port: 0, backlog: 4096,
  perMessageDeflate: { threshold: 0, serverNoContextTakeover: noTakeover, clientNoContextTakeover: noTakeover },
});
wss.on("headers", (headers) => {
  const ext = headers.find((h) => h.toLowerCase().startsWith("sec-websocket-extensions:"));
  if (ext) {
    const v = ext.slice(ext.indexOf(":") + 1).trim();
    counts.deflate_connections += 1;
    counts.params[v] = (counts.params[v] || 0) + 1;
  }
});
wss.on("connection", (ws) => {
  counts.connections += 1;
  ws.on("message", (data, isBinary) => { counts.messages += 1; ws.send(data, { binary: isBinary }); });
});
wss.on("listening", () => console.log(`READY ${wss.address().port}`));
setInterval(() => { fs.writeFileSync(stats + ".tmp", JSON.stringify(counts)); fs.renameSync(stats + ".tmp", stats); }, 200);
setTimeout(() => process.exit(0), seconds * 1000);
