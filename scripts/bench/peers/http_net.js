// http_net.js: the Node.js raw-net peer of scripts/bench/http.
//
// The same keep-alive HTTP/1.1 hello server as examples/http_hello.lua, on
// the net module: buffer what arrives, answer each complete request head
// (pipelining allowed), close after answering an HTTP/1.0 request or one
// with "Connection: close". Listens on 127.0.0.1:PORT (0, the default,
// picks one), prints "port=N" and serves until killed.
"use strict";
const net = require("net");

const BODY = "Hello, world!\n";
const RESPONSE = Buffer.from("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
  + BODY.length + "\r\n\r\n" + BODY, "latin1");
const CLOSE_RESPONSE = Buffer.from("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
  + "Connection: close\r\nContent-Length: " + BODY.length + "\r\n\r\n" + BODY, "latin1");
const VERSION = /^[A-Z]+ \S+ HTTP\/(\d\.\d)/;
const CLOSE = /\nconnection:\s*close/;

function ignore() {}

const server = net.createServer({ noDelay: true }, (socket) => {
  let pending = "";
  socket.setNoDelay(true);
  socket.setEncoding("latin1");
  socket.on("error", ignore); // resets from the load client
  socket.on("data", (data) => {
    const buf = pending.length ? pending + data : data;
    let pos = 0;
    for (;;) {
      const e = buf.indexOf("\r\n\r\n", pos);
      if (e < 0) break;
      const head = buf.slice(pos, e);
      pos = e + 4;
      const m = VERSION.exec(head);
      if (CLOSE.test(head.toLowerCase()) || (m && m[1] === "1.0")) {
        socket.end(CLOSE_RESPONSE);
        pending = "";
        return;
      }
      socket.write(RESPONSE);
    }
    pending = buf.slice(pos);
    if (pending.length > 65536) socket.end(); // no body support
  });
});
server.listen(Number(process.argv[2] || 0), "127.0.0.1", 1024, () => {
  process.stdout.write("port=" + server.address().port + "\n");
});
