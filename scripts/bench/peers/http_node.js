// http_node.js: the Node.js http-module peer of scripts/bench/http.
//
// http.createServer answering every request with the same 14-byte
// "Hello, world!\n" body as examples/http_hello.lua (Node adds its Date,
// Connection and Keep-Alive headers). keepAliveTimeout 0, so idle
// keep-alive connections stay open for the memory reading. Listens on
// 127.0.0.1:PORT (0, the default, picks one), prints "port=N" and serves
// until killed.
"use strict";
const http = require("http");

const BODY = Buffer.from("Hello, world!\n", "latin1");
const HEADERS = { "Content-Type": "text/plain", "Content-Length": BODY.length };

const server = http.createServer({ noDelay: true }, (req, res) => {
  res.writeHead(200, HEADERS);
  res.end(BODY);
});
server.keepAliveTimeout = 0;
server.on("clientError", (err, socket) => { socket.destroy(); });
server.listen(Number(process.argv[2] || 0), "127.0.0.1", 1024, () => {
  process.stdout.write("port=" + server.address().port + "\n");
});
