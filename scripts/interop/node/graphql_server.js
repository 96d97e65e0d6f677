// GraphQL over WebSocket server (subprotocol graphql-transport-ws) built on Node's
// `graphql-ws` + `ws` + `graphql` (peers nobody here wrote), for the GraphQL interop test.
// Prints `READY <port>` (any path is served), writes its counts to --stats every 200 ms,
// and exits after --seconds.
//
//   type Query { echo(text: String!): String! }
//   type Subscription { counter(to: Int!, intervalMs: Int!): Tick! }  (n = 1..to, one every
//   intervalMs, the first after intervalMs; ts = Date.now(); then complete)
//
// Options: --stats PATH, --seconds S (90), --server-ping-ms MS (0: off; else the server sends
// {"type":"ping"} to each acknowledged client every MS and counts the pongs),
// --keepalive-ms MS (12000, graphql-ws's default: WebSocket-level ping frames; a client that
// does not pong within MS is terminated; 0: off), --init-timeout-ms MS (3000, graphql-ws's
// default: close 4408 without connection_init by then).
//
// Counts: connections (WebSocket), connection_inits (= acks: every init is accepted),
// subscribes (subscribe messages), queries (query operations executed), subscriptions
// (subscription operations started), nexts, completes (complete messages sent), client_completes
// (subscriptions the client completed), errors (error messages sent: syntax, validation and
// resolver errors of subscriptions; a query's resolver error goes in `next`), client_pings
// (ping messages received; graphql-ws answers pong itself), server_pings (ping messages sent
// by --server-ping-ms), pongs (pong messages received), ws_pongs (WebSocket pong frames,
// answers to --keepalive-ms pings), closes {code: n}.
"use strict";
const fs = require("fs");
const { WebSocketServer } = require("ws");
const { useServer } = require("graphql-ws/use/ws");
const { buildSchema, getOperationAST, parse, validate, GraphQLError } = require("graphql");

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const stats = opt("--stats");
const seconds = Number(opt("--seconds", 90));
const serverPingMs = Number(opt("--server-ping-ms", 0));
const keepAliveMs = Number(opt("--keepalive-ms", 12000));
const initTimeoutMs = Number(opt("--init-timeout-ms", 3000));
if (!stats) { console.error("--stats PATH is required"); process.exit(2); }

const counts = {
  connections: 0, connection_inits: 0, subscribes: 0, queries: 0, subscriptions: 0, nexts: 0,
  completes: 0, client_completes: 0, errors: 0, client_pings: 0, server_pings: 0, pongs: 0,
  ws_pongs: 0, closes: {},
};

const schema = buildSchema(`
  type Query { echo(text: String!): String! }
  type Tick { n: Int!, ts: Float! }
  type Subscription { counter(to: Int!, intervalMs: Int!): Tick! }
`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const roots = {
  query: { echo: ({ text }) => text },
  subscription: {
    // Bounded by `to`; a client's complete (or a close) ends it at the next yield.
    counter: async function* ({ to, intervalMs }) {
      for (let n = 1; n <= to; n++) {
        await sleep(Math.max(0, intervalMs));
        yield { counter: { n, ts: Date.now() } };
      }
    },
  },
};

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, backlog: 4096 });
wss.on("connection", (socket) => {
  counts.connections += 1;
  socket.on("pong", () => { counts.ws_pongs += 1; });
});

useServer({
  schema,
  roots,
  connectionInitWaitTimeout: initTimeoutMs,
  onConnect: (ctx) => {
    counts.connection_inits += 1;
    // graphql-ws has no API for protocol pings from the server: send the raw message on
    // the socket; the pongs come back through onPong.
    if (serverPingMs > 0) {
      const socket = ctx.extra.socket;
      const timer = setInterval(() => {
        if (socket.readyState !== socket.OPEN) return clearInterval(timer);
        counts.server_pings += 1;
        socket.send('{"type":"ping"}');
      }, serverPingMs);
      socket.once("close", () => clearInterval(timer));
    }
    return true;
  },
  onPing: () => { counts.client_pings += 1; },
  onPong: () => { counts.pongs += 1; },
  // Parsed and validated here so that a syntax error becomes an `error` message too: left to
  // graphql-ws, parse() throws inside its message handler and the socket is closed with
  // 4500 and the parser's text as reason.
  onSubscribe: (ctx, id, payload) => {
    counts.subscribes += 1;
    let document;
    try {
      document = parse(payload.query);
    } catch (err) {
      if (err instanceof GraphQLError) return [err];
      throw err;
    }
    const errs = validate(schema, document);
    if (errs.length > 0) return errs;
    return { schema, document, operationName: payload.operationName, variableValues: payload.variables };
  },
  onOperation: (ctx, id, payload, execArgs) => {
    const op = getOperationAST(execArgs.document, execArgs.operationName);
    if (op && op.operation === "subscription") counts.subscriptions += 1;
    else counts.queries += 1;
  },
  onNext: () => { counts.nexts += 1; },
  onError: () => { counts.errors += 1; },
  onComplete: (ctx, id) => {
    // Still listed: the server completes it and tells the client; gone: the client
    // completed it (or the socket closed) and nothing is sent.
    if (id in ctx.subscriptions) counts.completes += 1;
    else counts.client_completes += 1;
  },
  onClose: (ctx, code) => { counts.closes[code] = (counts.closes[code] || 0) + 1; },
}, wss, keepAliveMs);

const dump = () => { fs.writeFileSync(stats + ".tmp", JSON.stringify(counts)); fs.renameSync(stats + ".tmp", stats); };
wss.on("listening", () => console.log(`READY ${wss.address().port}`));
setInterval(dump, 200);
setTimeout(() => { dump(); process.exit(0); }, seconds * 1000);
