// Long-lived TCP connections for tests of what happens to established connections: line
// echo servers that answer "<name>:<line>" and keep the connection open, and a client that
// holds N connections and, on request, sends a word on each and collects the answers.
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Netns } from "./netns.js";

const ECHO = String.raw`
import net from "node:net";
const [name, port] = process.argv.slice(1);
net.createServer((s) => {
  s.on("error", () => {});
  s.setEncoding("utf8");
  let buf = "";
  s.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) { s.write(name + ":" + buf.slice(0, i) + "\n"); buf = buf.slice(i + 1); }
  });
}).listen({ host: "::", port: Number(port), ipv6Only: false }, () => process.stdout.write("ready\n"));
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 300_000);
`;

// Reads JSON lines: {"word": W} sends W on every connection and prints the answers
// ("<name>:W", or "ERR:timeout" after timeoutMs, "ERR:<code>" once a connection failed).
const CLIENT = String.raw`
import net from "node:net";
import { createInterface } from "node:readline";
const o = JSON.parse(process.argv[1]);
const conns = [];
for (let i = 0; i < o.count; i++) {
  const c = { lines: [], waiter: null, error: "" };
  c.s = net.connect({ host: o.host, port: o.port, localAddress: o.localAddress, localPort: o.firstPort + i });
  c.s.setEncoding("utf8");
  let buf = "";
  c.s.on("data", (d) => {
    buf += d;
    let k;
    while ((k = buf.indexOf("\n")) >= 0) { c.lines.push(buf.slice(0, k)); buf = buf.slice(k + 1); c.waiter?.(); }
  });
  c.s.on("error", (e) => { c.error = "ERR:" + e.code; c.waiter?.(); });
  c.s.on("close", () => { c.error ||= "ERR:closed"; c.waiter?.(); });
  await new Promise((resolve, reject) => { c.s.once("connect", resolve); c.s.once("error", reject); });
  conns.push(c);
}
function ask(c, word) {
  if (c.error) return Promise.resolve(c.error);
  return new Promise((resolve) => {
    const finish = () => { clearTimeout(t); c.waiter = null; resolve(c.lines.length ? c.lines.shift() : c.error); };
    const t = setTimeout(() => { c.waiter = null; resolve("ERR:timeout"); }, o.timeoutMs);
    c.waiter = () => { if (c.lines.length || c.error) finish(); };
    c.s.write(word + "\n");
  });
}
process.stdout.write("connected\n");
for await (const line of createInterface({ input: process.stdin })) {
  const { word } = JSON.parse(line);
  process.stdout.write(JSON.stringify(await Promise.all(conns.map((c) => ask(c, word)))) + "\n");
}
for (const c of conns) c.s.destroy();
`;

/** Starts the echo server named `name` on `port` in `ns`; resolves to its stop function. */
export function startEchoServer(ns: Netns, name: string, port: number): Promise<() => void> {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", ECHO, name, String(port)],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  return new Promise((resolve, reject) => {
    child.stdout?.once("data", () => resolve(() => child.stdin?.end()));
    child.once("exit", (code) => reject(new Error(`echo server exited ${code}`)));
  });
}

export interface LongClientOptions {
  host: string;
  port: number;
  count: number;
  /** Connections use source ports firstPort, firstPort + 1, ... */
  firstPort: number;
  localAddress?: string;
  /** How long a round waits for each answer (default 2000 ms). */
  timeoutMs?: number;
}

/** N open connections; `round(word)` sends `word` on each and returns the answers. */
export class LongClients {
  private readonly lines: AsyncIterator<string>;

  private constructor(private readonly child: ChildProcess) {
    this.lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[
      Symbol.asyncIterator
    ]();
  }

  static async open(ns: Netns, o: LongClientOptions): Promise<LongClients> {
    const child = ns.spawn(
      process.execPath,
      ["--input-type=module", "-e", CLIENT, JSON.stringify({ timeoutMs: 2000, ...o })],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    const c = new LongClients(child);
    const first = await c.next();
    if (first !== "connected") throw new Error(`long client: ${first}`);
    return c;
  }

  private async next(): Promise<string> {
    const r = await this.lines.next();
    if (r.done) throw new Error("long client exited");
    return r.value;
  }

  async round(word: string): Promise<string[]> {
    this.child.stdin?.write(`${JSON.stringify({ word })}\n`);
    return JSON.parse(await this.next()) as string[];
  }

  close(): void {
    this.child.stdin?.end();
  }
}
