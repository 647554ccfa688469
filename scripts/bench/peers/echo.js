// echo.js: the Node.js peer of scripts/bench/echo (net module).
//
// Echoes every chunk with socket.write; TCP_NODELAY on every connection.
// Listens on 127.0.0.1:PORT (0, the default, picks one), prints "port=N"
// and serves until killed.
"use strict";
const net = require("net");

function ignore() {}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.setNoDelay(true);
  socket.on("data", (data) => { socket.write(data); });
  socket.on("error", ignore); // resets from the load client
});
server.listen(Number(process.argv[2] || 0), "127.0.0.1", 1024, () => {
  process.stdout.write("port=" + server.address().port + "\n");
});
