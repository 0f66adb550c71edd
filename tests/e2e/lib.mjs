// Shared helpers for the end-to-end tests (node --test tests/e2e/).
//
// startServer(mode, env) spawns the server under test on a free 127.0.0.1 port:
//   default          the chatd binary, path from CHATD_BIN (default build/chatd)
//   E2E_SERVER=replica  tests/e2e/replica-server.mjs (real Node socket.io), to
//                    prove the tests themselves
// It waits until GET /socket.io/?EIO=4&transport=polling answers 200 and
// returns a handle whose stop() kills the process by PID (SIGTERM, then SIGKILL)
// and awaits its exit; a graceful stop fails on a non-zero exit or a sanitizer
// report in the server's output (run with CHATD_BIN=build-san/chatd). Every spawned process is also killed when the test
// process exits, so a failing test never leaves a server behind.
import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
export const { io } = require("socket.io-client");

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../..");
export const REPLICA = process.env.E2E_SERVER === "replica";
const BIN = path.resolve(ROOT, process.env.CHATD_BIN || "build/chatd");

const live = new Set();
const SANITIZER_RE = /ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;
process.on("exit", () => {
  for (const child of live) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {}
  }
});

/** A free TCP port on 127.0.0.1 (bind to 0, read it, release it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Rejects after ms with a message naming what was awaited. */
export function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** Resolves with the arguments array of the next `event` on emitter (EventEmitter or socket). */
export function once(emitter, event, ms = 3000) {
  let handler;
  const p = new Promise((resolve) => {
    handler = (...args) => resolve(args);
    emitter.once(event, handler);
  });
  return withTimeout(p, ms, `"${event}"`).catch((e) => {
    emitter.off(event, handler);
    throw e;
  });
}

async function waitReady(url, child, ms) {
  const deadline = Date.now() + ms;
  let exited = null;
  const onExit = (code, sig) => (exited = `exited (code ${code}, signal ${sig})`);
  child.once("exit", onExit);
  try {
    for (let delay = 10; ; delay = Math.min(delay * 2, 100)) {
      if (exited) throw new Error(`server ${exited} before it was ready`);
      try {
        const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`);
        await res.arrayBuffer();
        if (res.status === 200) return;
      } catch {}
      if (Date.now() > deadline) throw new Error(`server not ready on ${url} after ${ms} ms`);
      // Readiness has no event to await: poll with a short backoff (STYLE §27).
      await new Promise((r) => setTimeout(r, delay));
    }
  } finally {
    child.off("exit", onExit);
  }
}

/**
 * Starts the server in `mode` ("conformance" | "bench-server") with extra env.
 * opts.port reuses a port (restart tests). Returns {url, port, pid, child, stop, output}.
 */
export async function startServer(mode, env = {}, opts = {}) {
  const port = opts.port || (await freePort());
  const cmd = REPLICA ? process.execPath : BIN;
  const args = REPLICA ? [path.join(here, "replica-server.mjs"), mode] : [mode];
  const childEnv = { ...process.env, ...env, CHATD_LISTEN: `127.0.0.1:${port}` };
  for (const k of Object.keys(childEnv)) if (childEnv[k] === undefined) delete childEnv[k];
  const child = spawn(cmd, args, { cwd: ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  let output = "";
  const keep = (d) => {
    output += d;
    if (output.length > 20000) output = output.slice(-20000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  exited.then(() => live.delete(child));
  const url = `http://127.0.0.1:${port}`;
  const handle = {
    url,
    port,
    pid: child.pid,
    child,
    exited,
    output: () => output,
    /**
     * Kill by PID (signal, default SIGTERM; SIGKILL after 3 s) and await exit.
     * After a graceful stop (not SIGKILL) it throws when the server did not exit
     * by itself with status 0 or printed a sanitizer report (ASan/LSan/UBSan
     * builds: CHATD_BIN=build-san/chatd), so leaks fail the test run.
     */
    async stop(signal = "SIGTERM") {
      let forced = false;
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, signal);
        } catch {}
        const timer = setTimeout(() => {
          forced = true;
          try {
            process.kill(child.pid, "SIGKILL");
          } catch {}
        }, 3000);
        await exited;
        clearTimeout(timer);
      }
      const r = await exited;
      if (signal !== "SIGKILL") {
        const report = SANITIZER_RE.test(output);
        if (forced || r.code !== 0 || report) {
          const why = forced
            ? `did not exit within 3 s of ${signal}`
            : report
              ? "printed a sanitizer report"
              : `exited with ${r.code ?? r.signal} after ${signal}`;
          throw new Error(`server (${mode}, pid ${child.pid}) ${why}\n--- server output ---\n${output.slice(-8000)}`);
        }
      }
      return r;
    },
  };
  try {
    await waitReady(url, child, 10000);
  } catch (e) {
    await handle.stop("SIGKILL");
    e.message += `\n--- server output ---\n${output}`;
    throw e;
  }
  return handle;
}

/** Normal Engine.IO timing for tests that are not about heartbeats. */
export const NORMAL_TIMING = { CHATD_PING_INTERVAL_MS: "25000", CHATD_PING_TIMEOUT_MS: "20000" };

const sockets = new Set();

/** A socket.io-client socket (forceNew, no auto reconnection unless asked). Tracked for closeAll. */
export function client(url, nsp = "/", opts = {}) {
  const s = io(`${url}${nsp}`, { forceNew: true, reconnection: false, timeout: 5000, ...opts });
  sockets.add(s);
  return s;
}

/** Resolves with the socket once connected; rejects with the connect_error. */
export function connected(socket, ms = 5000) {
  if (socket.connected) return Promise.resolve(socket);
  let onConnect, onError;
  const p = new Promise((resolve, reject) => {
    onConnect = () => resolve(socket);
    onError = (err) => reject(err);
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
  return withTimeout(p, ms, "connect").finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/** client() + connected(). */
export async function connect(url, nsp = "/", opts = {}) {
  return connected(client(url, nsp, opts));
}

/** Closes every socket made by client() (call in after/afterEach). */
export function closeAll() {
  for (const s of sockets) s.disconnect();
  sockets.clear();
}

/** Collects every `event` payload (first argument) a socket receives. */
export function collect(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}
