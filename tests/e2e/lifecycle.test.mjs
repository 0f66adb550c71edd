// Connection lifecycle with the real socket.io-client 4.x: automatic
// reconnection after the server restarts on the same port, and the disconnect
// reasons a client sees: "io client disconnect", "io server disconnect"
// (bench `disconnect-me`, no automatic reconnection), "transport close" when
// the server process is killed.
import { test, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, NORMAL_TIMING, client, connect, connected, closeAll, once } from "./lib.mjs";

const servers = new Set();
async function start(mode, env = NORMAL_TIMING, opts = {}) {
  const s = await startServer(mode, env, opts);
  servers.add(s);
  return s;
}
after(async () => {
  closeAll();
  await Promise.all([...servers].map((s) => s.stop("SIGKILL")));
});
afterEach(() => closeAll());

const RECONNECT = { reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 200, randomizationFactor: 0 };

async function roundTrip(s, v) {
  const back = once(s, "message-back");
  s.emit("message", v);
  assert.deepEqual(await back, [v]);
}

for (const [label, transports] of [
  ["websocket", ["websocket"]],
  ["default (polling+upgrade)", ["polling", "websocket"]],
  ["polling", ["polling"]],
]) {
  test(`reconnects by itself after a server restart on the same port: ${label}`, { timeout: 20000 }, async () => {
    const srv = await start("conformance");
    const s = client(srv.url, "/", { transports, ...RECONNECT, auth: { token: "keep-me" } });
    const auths = [];
    s.on("auth", (a) => auths.push(a));
    await connected(s);
    if (transports.length === 2 && s.io.engine.transport.name !== "websocket") await once(s.io.engine, "upgrade", 5000);
    const firstId = s.id;
    await roundTrip(s, "before");

    const disc = once(s, "disconnect", 10000);
    await srv.stop("SIGTERM"); // graceful shutdown
    servers.delete(srv);
    const [reason] = await disc;
    assert.notEqual(reason, "io server disconnect", "a restart must not look like a deliberate server disconnect (the client would not reconnect)");
    assert.ok(["transport close", "transport error", "ping timeout"].includes(reason), `reason ${reason}`);
    assert.equal(s.active, true, "the client keeps trying to reconnect");

    const again = once(s, "connect", 15000);
    const srv2 = await start("conformance", NORMAL_TIMING, { port: srv.port });
    await again;
    assert.equal(s.connected, true);
    assert.notEqual(s.id, firstId, "a new session after the restart");
    await roundTrip(s, "after");
    // the CONNECT payload is sent again on reconnection (auth echoed before and after)
    assert.deepEqual(auths, [{ token: "keep-me" }, { token: "keep-me" }]);
    await srv2.stop();
    servers.delete(srv2);
  });
}

test('disconnect reason "io client disconnect", and the connection is really gone', async () => {
  const srv = await start("conformance");
  const s = await connect(srv.url, "/", { transports: ["websocket"], ...RECONNECT });
  const disc = once(s, "disconnect");
  s.disconnect();
  const [reason] = await disc;
  assert.equal(reason, "io client disconnect");
  assert.equal(s.connected, false);
  assert.equal(s.active, false, "no reconnection after a client disconnect");
  // the server keeps serving others
  const t = await connect(srv.url, "/", { transports: ["websocket"] });
  await roundTrip(t, "others fine");
});

test('disconnect reason "io server disconnect" from disconnect-me (no automatic reconnection)', async () => {
  const srv = await start("bench-server");
  for (const transports of [["websocket"], ["polling"]]) {
    const s = await connect(srv.url, "/chat", { transports, auth: { token: "t" }, ...RECONNECT });
    const disc = once(s, "disconnect");
    s.emit("disconnect-me");
    const [reason] = await disc;
    assert.equal(reason, "io server disconnect", `transports ${transports}`);
    assert.equal(s.active, false, "the client does not reconnect by itself");
    // the client may reconnect manually
    s.connect();
    await connected(s);
    assert.deepEqual(await s.timeout(2000).emitWithAck("echo", "back"), "back");
  }
});

test('disconnect reason "transport close" when the server process is killed', async () => {
  for (const transports of [["websocket"], ["polling"]]) {
    const srv = await start("conformance");
    const s = await connect(srv.url, "/", { transports });
    await roundTrip(s, "alive");
    const disc = once(s, "disconnect", 10000);
    await srv.stop("SIGKILL");
    servers.delete(srv);
    const [reason] = await disc;
    if (transports[0] === "websocket") assert.equal(reason, "transport close");
    else assert.ok(["transport close", "transport error"].includes(reason), `polling reason ${reason}`);
  }
});
