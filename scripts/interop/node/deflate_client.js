// Clients with permessage-deflate, built on Node's `ws` (a peer nobody here wrote), against
// the built-in gateway's `serve --compression` (the gateway-side interop test).
//
// Opens --connections connections at once, each offering permessage-deflate (with or without
// context takeover: --no-context-takeover), and sends, one at a time, --messages text messages
// alternating under and over ws's 1 KiB compression threshold (so the gateway gets both
// uncompressed and compressed messages on one compressed session), then one compressed message
// in two fragments. Each echo must be the very message sent. Prints one JSON line of counts:
// connections, answers (the 101's Sec-WebSocket-Extensions), sent, matched, mismatched, errors.
'use strict';
const WebSocket = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const url = opt('--url');
const connections = Number(opt('--connections', '200'));
const messages = Number(opt('--messages', '20'));
const noTakeover = args.includes('--no-context-takeover');

const counts = { connections: 0, answers: {}, sent: 0, matched: 0, mismatched: 0, errors: [] };

function payload(conn, i) {
  const row = `{"id":${i},"conn":${conn},"name":"sockstorm","ok":true},`;
  const size = i % 2 === 0 ? 600 : 2000;
  return '[' + row.repeat(Math.floor(size / row.length)) + '{}]';
}

function client(conn) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: { clientNoContextTakeover: noTakeover, serverNoContextTakeover: noTakeover },
    });
    const queue = [];
    for (let i = 0; i < messages; i++) queue.push([payload(conn, i)]);
    const whole = payload(conn, 1001);
    queue.push([whole.slice(0, 700), whole.slice(700)]);
    let expected = null;
    const next = () => {
      const parts = queue.shift();
      if (!parts) {
        ws.close(1000);
        return;
      }
      expected = parts.join('');
      counts.sent++;
      if (parts.length === 1) {
        ws.send(parts[0]);
      } else {
        ws.send(parts[0], { fin: false, compress: true });
        ws.send(parts[1], { fin: true, compress: true });
      }
    };
    ws.on('upgrade', (res) => {
      const answer = res.headers['sec-websocket-extensions'] || '';
      counts.answers[answer] = (counts.answers[answer] || 0) + 1;
    });
    ws.on('open', () => {
      counts.connections++;
      next();
    });
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === expected) counts.matched++;
      else counts.mismatched++;
      next();
    });
    ws.on('error', (e) => counts.errors.push(String(e).slice(0, 200)));
    ws.on('close', () => resolve());
  });
}

const timer = setTimeout(() => {
  counts.errors.push('timed out');
  console.log(JSON.stringify(counts));
  process.exit(1);
}, 60000);
Promise.all(Array.from({ length: connections }, (_, c) => client(c))).then(() => {
  clearTimeout(timer);
  console.log(JSON.stringify(counts));
});
