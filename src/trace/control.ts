// The daemon's control endpoint, in its main thread: a Unix stream socket (root, mode
// 0600) and, only when asked, a TCP port. It answers ping and status requests and
// attaches tracers to the TraceHub (see protocol.ts). Nothing it does can hold up packet
// handling: the workers only ever see the trace mask and their rings.
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
} from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { dirname, join } from "node:path";
import type { TraceHub, Tracer } from "./hub.js";
import { selectionOf } from "./kinds.js";
import { errorLine, MAX_REQUEST_BYTES, parseRequest, RequestError } from "./protocol.js";

export type LogFn = (level: "warning" | "notice" | "info" | "debug", message: string) => void;

export interface ControlServerOptions {
  /** Unix socket path; undefined = none. */
  socketPath?: string;
  /** TCP endpoint; undefined = none. */
  tcp?: { host: string; port: number };
  hub: TraceHub;
  log: LogFn;
  /** Fields of the ping answer (name, queues, ...). */
  describe: () => Record<string, unknown>;
}

/** Concurrent control connections; more are refused. */
export const MAX_CONNECTIONS = 32;
/** A connection must send its first request within this time. */
const REQUEST_TIMEOUT_MS = 10_000;
/** At shutdown, tracers get this long to take their last lines. */
const CLOSE_GRACE_MS = 200;

/** Resolves true when something accepts a connection on the Unix socket `path`. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (answers: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(answers);
    };
    // A listener whose backlog is full does not refuse: count it as alive.
    const timer = setTimeout(() => done(true), timeoutMs);
    s.on("connect", () => done(true));
    s.on("error", () => done(false));
  });
}

function listen(server: Server, options: { path: string } | { host: string; port: number }) {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

export class ControlServer {
  private unix: Server | undefined;
  private tcp: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** Inode of the socket file this daemon put in place: only that one is removed. */
  private socketInode = -1;
  private readonly onExit = () => this.removeSocketFile();
  private closed = false;

  constructor(private readonly options: ControlServerOptions) {}

  /** The Unix socket path when it is being served. */
  get path(): string | undefined {
    return this.socketInode >= 0 ? this.options.socketPath : undefined;
  }

  /**
   * Starts listening. A Unix socket that cannot be set up is logged and skipped (tracing
   * is not worth refusing to balance); a TCP endpoint that was asked for and cannot be
   * opened throws.
   */
  async start(): Promise<void> {
    const { socketPath, tcp, log } = this.options;
    if (socketPath !== undefined) {
      try {
        await this.startUnix(socketPath);
      } catch (err) {
        log("warning", `no control socket: ${(err as Error).message}`);
      }
    }
    if (tcp !== undefined) {
      const server = createServer((s) => this.accept(s, `tcp ${s.remoteAddress}:${s.remotePort}`));
      try {
        await listen(server, tcp);
      } catch (err) {
        await this.close();
        throw new Error(`control endpoint ${tcp.host}:${tcp.port}: ${(err as Error).message}`);
      }
      this.tcp = server;
      log("info", `control endpoint on tcp ${tcp.host}:${tcp.port}`);
    }
  }

  private async startUnix(path: string): Promise<void> {
    const { log } = this.options;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    let existing: ReturnType<typeof lstatSync> | undefined;
    try {
      existing = lstatSync(path);
    } catch {
      // none
    }
    if (existing !== undefined) {
      if (!existing.isSocket()) throw new Error(`${path} exists and is not a socket: left alone`);
      if (await socketAnswers(path)) {
        throw new Error(`another daemon answers on ${path}`);
      }
      unlinkSync(path);
      log("info", `removed the stale control socket ${path}`);
    }
    // Bind in a private directory (mode 0700), restrict the socket to 0600, then move it
    // into place: the socket is never reachable with wider permissions, and the process
    // umask (shared with the worker threads) is left alone.
    const tmpDir = mkdtempSync(join(dirname(path), ".sock-"));
    const tmp = join(tmpDir, "s");
    const server = createServer((s) => this.accept(s, "unix"));
    try {
      await listen(server, { path: tmp });
      chmodSync(tmp, 0o600);
      renameSync(tmp, path);
    } catch (err) {
      server.close();
      throw err;
    } finally {
      try {
        rmdirSync(tmpDir);
      } catch {
        // not empty if the rename failed; the socket went with server.close()
      }
    }
    this.unix = server;
    this.socketInode = statSync(path).ino;
    process.on("exit", this.onExit);
    log("info", `control socket ${path}`);
  }

  private accept(socket: Socket, peer: string): void {
    const { hub, log } = this.options;
    socket.on("error", () => {
      // a tracer that went away; "close" follows
    });
    if (this.closed || this.sockets.size >= MAX_CONNECTIONS) {
      socket.end(errorLine(this.closed ? "daemon stopping" : "too many control connections"));
      return;
    }
    this.sockets.add(socket);
    socket.setEncoding("utf8");
    let pending = "";
    let tracer: Tracer | undefined;
    const timer = setTimeout(() => socket.destroy(), REQUEST_TIMEOUT_MS);
    const answer = (value: Record<string, unknown>) => socket.write(`${JSON.stringify(value)}\n`);
    const handle = (line: string): void => {
      let request: ReturnType<typeof parseRequest>;
      try {
        request = parseRequest(line);
      } catch (err) {
        const message = err instanceof RequestError ? err.message : String(err);
        log("debug", `control request from ${peer} refused: ${message}`);
        socket.end(errorLine(message));
        return;
      }
      log("debug", `control request from ${peer}: ${line}`);
      switch (request.op) {
        case "ping":
          answer({ ok: true, op: "ping", pid: process.pid, ...this.options.describe() });
          return;
        case "status":
          answer({
            ok: true,
            op: "status",
            pid: process.pid,
            ...this.options.describe(),
            ...hub.status(),
          });
          return;
        case "trace": {
          const { mask, json } = request;
          answer({ ok: true, op: "trace", mask, selection: selectionOf(mask), json });
          tracer = hub.attach(socket, mask, json);
          log(
            "info",
            `tracer ${tracer.id} attached (${peer}): ${selectionOf(mask).join(",")}${json ? ", json" : ""}`,
          );
          return;
        }
      }
    };
    socket.on("data", (chunk: string) => {
      if (tracer !== undefined || socket.destroyed) return; // a trace stream: input ignored
      pending += chunk;
      let nl = pending.indexOf("\n");
      while (nl >= 0 && tracer === undefined && !socket.writableEnded) {
        clearTimeout(timer);
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (line !== "") handle(line);
        nl = pending.indexOf("\n");
      }
      if (pending.length > MAX_REQUEST_BYTES && !socket.writableEnded) {
        socket.end(errorLine("request too long"));
      }
    });
    socket.on("close", () => {
      clearTimeout(timer);
      this.sockets.delete(socket);
      if (tracer !== undefined) {
        hub.detach(tracer);
        log(
          "info",
          `tracer ${tracer.id} detached: ${tracer.lines} lines, ${tracer.dropped} dropped`,
        );
      }
    });
  }

  /** Removes the socket file if it is still the one this daemon created. */
  removeSocketFile(): void {
    const path = this.options.socketPath;
    if (path === undefined || this.socketInode < 0) return;
    try {
      if (statSync(path).ino === this.socketInode) unlinkSync(path);
    } catch {
      // already gone
    }
    this.socketInode = -1;
  }

  /** Stops listening, removes the socket file, lets tracers take their last lines. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.removeSocketFile();
    process.off("exit", this.onExit);
    const servers = [this.unix, this.tcp].filter((s): s is Server => s !== undefined);
    for (const s of servers) s.close();
    for (const socket of this.sockets) socket.end();
    if (this.sockets.size > 0) {
      await new Promise((r) => setTimeout(r, CLOSE_GRACE_MS));
      for (const socket of this.sockets) socket.destroy();
    }
  }
}
