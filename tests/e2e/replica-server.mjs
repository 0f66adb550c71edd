#!/usr/bin/env node
// Node replica of the two chatd modes the end-to-end tests drive, built on the
// real `socket.io` / `engine.io` packages. The e2e tests are proven against it
// (E2E_SERVER=replica) and then run unchanged against build/chatd.
//
//   node tests/e2e/replica-server.mjs conformance    (see shared/conformance/reference-server.js)
//   node tests/e2e/replica-server.mjs bench-server   (/chat rooms, echo, server-ack, disconnect-me)
//
// Environment, as chatd reads it: CHATD_LISTEN (host:port), CHATD_PING_INTERVAL_MS,
// CHATD_PING_TIMEOUT_MS, CHATD_MAX_PAYLOAD. Conformance mode defaults to ping 300/200
// like `chatd conformance`; bench-server to 25000/20000.
import http from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Server: EngineServer } = require("engine.io");
const { Server: SocketIOServer } = require("socket.io");

const mode = process.argv[2] || "conformance";
const [host, portStr] = (process.env.CHATD_LISTEN || "127.0.0.1:8080").split(/:(?=[^:]*$)/);
const conformance = mode === "conformance";
const envInt = (name, def) => (process.env[name] !== undefined ? Number(process.env[name]) : def);
const COMMON = {
  pingInterval: envInt("CHATD_PING_INTERVAL_MS", conformance ? 300 : 25000),
  pingTimeout: envInt("CHATD_PING_TIMEOUT_MS", conformance ? 200 : 20000),
  maxHttpBufferSize: envInt("CHATD_MAX_PAYLOAD", 1000000),
};

const httpServer = http.createServer((req, res) => {
  res.writeHead(404, { "Content-Type": "text/plain" });
  res.end("not found");
});

let io;
if (conformance) {
  const engine = new EngineServer({ ...COMMON });
  engine.attach(httpServer, { path: "/engine.io/" });
  engine.on("connection", (socket) => socket.on("message", (data) => socket.send(data)));

  io = new SocketIOServer(httpServer, { ...COMMON, path: "/socket.io/", serveClient: false });
  const onConnect = (socket) => {
    socket.emit("auth", socket.handshake.auth);
    if (socket.nsp.name !== "/") return;
    socket.on("message", (...args) => {
      if (typeof args[args.length - 1] === "function") args.pop();
      socket.emit("message-back", ...args);
    });
    socket.on("message-with-ack", (...args) => {
      const ack = args.pop();
      if (typeof ack === "function") ack(...args);
    });
  };
  io.on("connection", onConnect);
  io.of("/custom").on("connection", onConnect);
} else if (mode === "bench-server") {
  io = new SocketIOServer(httpServer, { ...COMMON, path: "/socket.io/", serveClient: false });
  // chatd serves only /chat in this mode: "/" is refused like an unknown namespace.
  io.of("/").use((socket, next) => next(new Error("Invalid namespace")));
  const chat = io.of("/chat");
  chat.use((socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    if (typeof token === "string" && token.length > 0) return next();
    const err = new Error("unauthorized");
    err.data = { code: "token_missing" };
    next(err);
  });
  const OK = { ok: true };
  const BAD = { ok: false, error: { code: "bad_request", message: "bad payload" } };
  chat.on("connection", (socket) => {
    const reply = (ack, v) => typeof ack === "function" && ack(v);
    const chatId = (p) => (p && typeof p === "object" && typeof p.chatId === "string" && p.chatId) || null;
    socket.on("join", (p, ack) => {
      const id = chatId(p);
      if (!id) return reply(ack, BAD);
      socket.join(id);
      reply(ack, OK);
    });
    socket.on("leave", (p, ack) => {
      const id = chatId(p);
      if (!id) return reply(ack, BAD);
      socket.leave(id);
      reply(ack, OK);
    });
    socket.on("chat-message", (...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
      const id = chatId(args[0]);
      if (!id || !socket.rooms.has(id)) return reply(ack, BAD);
      chat.to(id).emit("chat-message", ...args);
      reply(ack, OK);
    });
    socket.on("echo", (...args) => {
      const ack = args.pop();
      if (typeof ack === "function") ack(...args);
    });
    socket.on("server-ack", (p, ack) => {
      if (!p || typeof p.event !== "string" || (p.args !== undefined && !Array.isArray(p.args)))
        return reply(ack, BAD);
      socket.emit(p.event, ...(p.args || []), (...res) => socket.emit("server-ack-result", res));
      reply(ack, OK);
    });
    socket.on("disconnect-me", () => socket.disconnect());
  });
} else {
  console.error(`replica-server: unknown mode ${mode}`);
  process.exit(2);
}

httpServer.listen(Number(portStr), host, () => {
  console.log(`replica ${mode} listening on ${host}:${portStr}`);
});

const shutdown = () => {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
