// A lab for health check tests: check servers in the target namespaces (tcp, http, https,
// udp, with a switchable HTTP status and body), a way to blackhole a target, and the
// health runner (health-runner.ts) in the load balancer's namespace.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Netns } from "./netns.js";
import { run } from "./netns.js";

export const PORTS = { tcp: 7000, http: 8080, https: 8443, udp: 5353 } as const;

const SERVER = String.raw`
import net from "node:net";
import http from "node:http";
import https from "node:https";
import dgram from "node:dgram";
import fs from "node:fs";
import readline from "node:readline";
const o = JSON.parse(process.argv[1]);
const state = { status: 200, body: "ok" };
const plain = (a) => String(a).replace(/^::ffff:/, "");
function handler(req, res) {
  const sni = req.socket.servername || "none";
  res.writeHead(state.status, { "content-type": "text/plain" });
  if (req.url === "/big") return res.end("x".repeat(100 * 1024) + "MATCH");
  res.end(state.body + " name=" + o.name + " peer=" + plain(req.socket.remoteAddress) +
    " host=" + req.headers.host + " sni=" + sni + " method=" + req.method + "\n");
}
let pending = 0;
const ready = () => { if (--pending === 0) process.stdout.write("ready\n"); };
const fail = (e) => { console.error(String(e)); process.exit(1); };
const listen = (server) => {
  pending++;
  server.on("error", fail);
  return server;
};
listen(net.createServer((s) => { s.on("error", () => {}); s.end(); })).listen({ host: "::", port: o.tcp }, ready);
listen(http.createServer(handler)).listen({ host: "::", port: o.http }, ready);
const tls = { cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.key) };
listen(https.createServer(tls, handler)).listen({ host: "::", port: o.https }, ready);
const u = dgram.createSocket({ type: "udp6", ipv6Only: false });
pending++;
u.on("error", fail);
u.on("message", (m, r) => u.send(m.toString() === "ping" ? "pong " + o.name : "what?", r.port, r.address));
u.bind(o.udp, "::", ready);
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [what, ...rest] = line.split(" ");
  if (what === "status") state.status = Number(rest[0]);
  if (what === "body") state.body = rest.join(" ");
  process.stdout.write("done " + line + "\n");
});
process.stdin.on("close", () => process.exit(0));
setTimeout(() => process.exit(0), 600_000);
`;

/** A self-signed certificate for the https servers (CN nflb-test), removed with `cleanup`. */
export function selfSignedCert(): { cert: string; key: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "nflb-cert-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "1",
    "-subj",
    "/CN=nflb-test",
  ]);
  return { cert, key, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export class CheckServer {
  private child: ChildProcess | undefined;
  private waiters: ((line: string) => void)[] = [];

  constructor(
    readonly ns: Netns,
    readonly name: string,
    private readonly tls: { cert: string; key: string },
  ) {}

  /** Starts (or restarts) the servers; resolves once all of them listen. */
  start(): Promise<void> {
    const options = { name: this.name, ...PORTS, ...this.tls };
    const child = this.ns.spawn(
      process.execPath,
      ["--input-type=module", "-e", SERVER, JSON.stringify(options)],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    this.child = child;
    let err = "";
    child.stderr?.on("data", (d) => {
      err += d;
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no start: ${err}`)), 10_000);
      lines.on("line", (line) => {
        if (line === "ready") {
          clearTimeout(timer);
          resolve();
        } else this.waiters.shift()?.(line);
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code}): ${err}`));
      });
    });
  }

  /** Kills the servers at once (SIGKILL): further connections are refused. */
  kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once("exit", () => resolve());
      // `ip netns exec` execs node, so the child is the server itself.
      child.kill("SIGKILL");
    });
  }

  /** "status 500", "body sick": applied when the promise resolves. */
  control(command: string): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push(() => resolve());
      this.child?.stdin?.write(`${command}\n`);
    });
  }

  stop(): void {
    this.child?.stdin?.end();
    this.child?.kill("SIGKILL");
    this.child = undefined;
  }
}

const BLACKHOLE = "nflbt_blackhole";

/** Drops every packet arriving in `ns` (the timeout path); undone by `unblackhole`. */
export function blackhole(ns: Netns): void {
  ns.exec(
    "nft",
    ["-f", "-"],
    `table inet ${BLACKHOLE} {\n chain input {\n  type filter hook input priority 0; policy drop;\n }\n}\n`,
  );
}

export function unblackhole(ns: Netns): void {
  ns.exec("nft", ["delete", "table", "inet", BLACKHOLE]);
}

const RUNNER = fileURLToPath(new URL("./health-runner.js", import.meta.url));

export interface RunnerEvent {
  event: string;
  wall: number;
  [k: string]: unknown;
}

/** The health runner in a namespace: requests, and every event it reported. */
export class HealthRunner {
  readonly events: RunnerEvent[] = [];
  private nextId = 1;
  private replies = new Map<
    number,
    (r: { ok: boolean; result?: unknown; error?: string }) => void
  >();
  private listeners: (() => void)[] = [];
  private stderr = "";

  private constructor(private readonly child: ChildProcess) {
    child.stderr?.on("data", (d) => {
      this.stderr += d;
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const msg = JSON.parse(line);
      if (msg.id !== undefined) {
        this.replies.get(msg.id)?.(msg);
        this.replies.delete(msg.id);
      } else {
        this.events.push(msg as RunnerEvent);
        for (const l of this.listeners.splice(0)) l();
      }
    });
  }

  static start(ns: Netns): Promise<HealthRunner> {
    const child = ns.spawn(process.execPath, [RUNNER], { stdio: ["pipe", "pipe", "pipe"] });
    const runner = new HealthRunner(child);
    return runner.waitFor((e) => e.event === "ready", 10_000).then(() => runner);
  }

  request<T = unknown>(op: string, body: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.replies.set(id, (r) => (r.ok ? resolve(r.result as T) : reject(new Error(r.error))));
      this.child.stdin?.write(`${JSON.stringify({ id, op, ...body })}\n`);
    });
  }

  /** Resolves with the first event from index `from` on that matches, or rejects. */
  waitFor(match: (e: RunnerEvent) => boolean, timeoutMs: number, from = 0): Promise<RunnerEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `no matching health event within ${timeoutMs} ms${this.stderr ? `: ${this.stderr}` : ""}`,
          ),
        );
      }, timeoutMs);
      const look = () => {
        const found = this.events.slice(from).find(match);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        } else this.listeners.push(look);
      };
      look();
    });
  }

  /** Transitions (as the runner reported them) from index `from` on. */
  transitions(from = 0): RunnerEvent[] {
    return this.events.slice(from).filter((e) => e.event === "transition");
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null) return resolve();
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
      this.child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      this.child.stdin?.end();
    });
  }
}
