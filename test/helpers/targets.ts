// Test servers and clients for load balancer tests, run inside network namespaces.
//
// A target server answers every TCP connection and every UDP datagram with its own name.
// The clients make N TCP connections / UDP requests from distinct, explicit source ports
// and return the answers. Everything is bounded in count and time.
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { link, type Netns, Topology } from "./netns.js";

const SERVER = String.raw`
import net from "node:net";
import dgram from "node:dgram";
const [name, portText, udpList] = process.argv.slice(1);
const port = Number(portText);
let pending = 1;
const ready = () => { if (--pending === 0) process.stdout.write("ready\n"); };
const tcp = net.createServer((s) => { s.on("error", () => {}); s.end(name + "\n"); });
tcp.on("error", (e) => { console.error(String(e)); process.exit(1); });
tcp.listen({ host: "::", port, ipv6Only: false }, ready);
// One UDP socket per address: a reply must come from the address that was asked (in dsr
// that is the VIP), and a wildcard socket would answer from the routing's choice.
for (const addr of udpList ? udpList.split(",") : []) {
  pending++;
  const u = dgram.createSocket(addr.includes(":") ? "udp6" : "udp4");
  u.on("message", (msg, rinfo) => u.send(name, rinfo.port, rinfo.address));
  u.on("error", (e) => { console.error(String(e)); process.exit(1); });
  u.bind(port, addr, ready);
}
// Exit with the test process (stdin closes) and in any case after ten minutes.
process.stdin.on("end", () => process.exit(0));
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 600_000);
`;

const CLIENT = `
import net from "node:net";
import dgram from "node:dgram";
const o = JSON.parse(process.argv[1]);
const answers = new Array(o.count).fill("");
function tcpOne(i) {
  return new Promise((resolve) => {
    let data = "";
    const s = net.connect({ host: o.host, port: o.port, localAddress: o.localAddress, localPort: o.firstPort + i });
    const done = (v) => { clearTimeout(t); s.destroy(); resolve(v); };
    const t = setTimeout(() => done("ERR:timeout"), o.timeoutMs);
    s.setEncoding("utf8");
    s.on("data", (d) => { data += d; });
    s.on("end", () => done(data.trim()));
    s.on("error", (e) => done("ERR:" + e.code));
  });
}
function udpOne(i) {
  return new Promise((resolve) => {
    const u = dgram.createSocket(o.host.includes(":") ? "udp6" : "udp4");
    let tries = 0;
    let timer;
    const done = (v) => { clearTimeout(timer); u.close(); resolve(v); };
    const send = () => {
      if (tries++ >= 3) return done("ERR:timeout");
      u.send("hello", o.port, o.host);
      timer = setTimeout(send, o.timeoutMs / 3);
    };
    u.on("message", (m) => done(m.toString()));
    u.on("error", (e) => done("ERR:" + e.code));
    u.bind({ address: o.localAddress, port: o.firstPort + i }, send);
  });
}
const one = o.proto === "udp" ? udpOne : tcpOne;
let next = 0;
async function worker() { while (next < o.count) { const i = next++; answers[i] = await one(i); } }
await Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, worker));
process.stdout.write(JSON.stringify(answers));
`;

export interface TargetServer {
  name: string;
  stop(): void;
}

/**
 * Starts a server named `name` in `ns` on TCP `port` (all addresses) and UDP `port` on
 * each of `udpAddresses`; resolves once it listens.
 */
export function startTargetServer(
  ns: Netns,
  name: string,
  port: number,
  udpAddresses: readonly string[],
): Promise<TargetServer> {
  const child: ChildProcess = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", SERVER, name, String(port), udpAddresses.join(",")],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const stop = () => {
    child.stdin?.end();
    if (child.exitCode === null) child.kill("SIGTERM");
  };
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`target server ${name} did not start: ${err}`));
    }, 10_000);
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.stdout?.on("data", (d) => {
      out += d;
      if (out.includes("ready")) {
        clearTimeout(timer);
        resolve({ name, stop });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`target server ${name} exited (${code}): ${err}`));
    });
  });
}

export interface ClientOptions {
  host: string;
  port: number;
  count: number;
  /** Source ports are firstPort, firstPort+1, ... (distinct, explicit). */
  firstPort: number;
  localAddress?: string;
  concurrency?: number;
  timeoutMs?: number;
}

function runClient(ns: Netns, proto: "tcp" | "udp", o: ClientOptions): Promise<string[]> {
  const opts = { concurrency: 16, timeoutMs: 3000, ...o, proto };
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", CLIENT, JSON.stringify(opts)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    // Bound: every request times out on its own; this only guards against a hang.
    const limit = Math.ceil(opts.count / opts.concurrency) * opts.timeoutMs + 20_000;
    const timer = setTimeout(() => child.kill("SIGKILL"), limit);
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`client failed (${code}): ${err}`));
      else resolve(JSON.parse(out) as string[]);
    });
  });
}

/** `count` TCP connections, each answered with the server's name (or "ERR:..."). */
export function tcpRequests(ns: Netns, o: ClientOptions): Promise<string[]> {
  return runClient(ns, "tcp", o);
}

/** `count` UDP requests from distinct sockets (up to 3 tries each). */
export function udpRequests(ns: Netns, o: ClientOptions): Promise<string[]> {
  return runClient(ns, "udp", o);
}

/** How often each answer occurs. */
export function tally(answers: readonly string[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const a of answers) t[a] = (t[a] ?? 0) + 1;
  return t;
}

const NETFILTER = fileURLToPath(new URL("../../src/netfilter/index.js", import.meta.url));

const CALL = `
const [mod, fn, args] = process.argv.slice(1);
const m = await import(mod);
try {
  const result = await m[fn](...JSON.parse(args));
  process.stdout.write(JSON.stringify({ ok: true, result: result ?? null }));
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, name: e?.name, error: String(e?.message ?? e) }));
}
`;

export type CallResult<T> = { ok: true; result: T } | { ok: false; name: string; error: string };

/**
 * Calls a function of dist/src/netfilter inside `ns` (a child node process run with
 * `ip netns exec`), since the rules must be made in that namespace.
 */
export function netfilterCall<T = unknown>(
  ns: Netns,
  fn: string,
  ...args: unknown[]
): CallResult<T> {
  const out = ns.exec(process.execPath, [
    "--input-type=module",
    "-e",
    CALL,
    NETFILTER,
    fn,
    JSON.stringify(args),
  ]);
  return JSON.parse(out) as CallResult<T>;
}

/** Like netfilterCall, but throws when the call failed. */
export function netfilter<T = unknown>(ns: Netns, fn: string, ...args: unknown[]): T {
  const r = netfilterCall<T>(ns, fn, ...args);
  if (!r.ok) throw new Error(`${fn} in ${ns.name} failed: ${r.name}: ${r.error}`);
  return r.result;
}

/**
 * One layer-2 segment (a bridge in a "switch" namespace) with a client, a load balancer
 * and three targets. Two subnets share it:
 *   front 10.100.1.0/24, fd00:101::/64: client .10, lb .1
 *   back  10.100.0.0/24, fd00:100::/64: lb .1, targets .21 .22 .23, client .10 too
 * Targets route via the lb (nat). A client using its back address is on-link for the
 * targets, which then answer it directly (dsr). VIPs: 10.200.0.0/24, fd00:200::/64.
 */
export interface LbTopology {
  topo: Topology;
  client: Netns;
  lb: Netns;
  targets: Netns[];
  targetAddrs: { v4: string; v6: string }[];
}

export function lbTopology(): LbTopology {
  const topo = new Topology();
  try {
    const sw = topo.add("sw");
    const client = topo.add("cl");
    const lb = topo.add("lb");
    const targets = [1, 2, 3].map((i) => topo.add(`t${i}`));
    // No duplicate address detection: addresses and link-locals usable at once.
    for (const ns of [sw, client, lb, ...targets]) {
      ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
      ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
    }
    sw.exec("ip", ["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    sw.exec("ip", ["link", "set", "br0", "up"]);
    const port = (peer: Netns, p: string, addrs: string[]) => {
      link(sw, p, [], peer, "eth0", addrs);
      sw.exec("ip", ["link", "set", p, "master", "br0"]);
    };
    port(client, "p-cl", [
      "10.100.1.10/24",
      "10.100.0.10/24",
      "fd00:101::10/64",
      "fd00:100::10/64",
    ]);
    port(lb, "p-lb", ["10.100.1.1/24", "10.100.0.1/24", "fd00:101::1/64", "fd00:100::1/64"]);
    const targetAddrs = targets.map((t, i) => {
      const a = { v4: `10.100.0.2${i + 1}`, v6: `fd00:100::2${i + 1}` };
      port(t, `p-t${i + 1}`, [`${a.v4}/24`, `${a.v6}/64`]);
      t.exec("ip", ["route", "add", "default", "via", "10.100.0.1"]);
      t.exec("ip", ["-6", "route", "add", "default", "via", "fd00:100::1"]);
      return a;
    });
    // Explicit source: the front address, off-link for the targets, unless a test binds
    // the back one.
    client.exec("ip", ["route", "add", "10.200.0.0/24", "via", "10.100.1.1", "src", "10.100.1.10"]);
    client.exec("ip", [
      "-6",
      "route",
      "add",
      "fd00:200::/64",
      "via",
      "fd00:101::1",
      "src",
      "fd00:101::10",
    ]);
    // Locally originated connections need a route to the VIPs to reach OUTPUT at all.
    lb.exec("ip", ["route", "add", "10.200.0.0/24", "dev", "eth0"]);
    lb.exec("ip", ["-6", "route", "add", "fd00:200::/64", "dev", "eth0"]);
    // One-armed lb: its ICMP redirects would teach the client to bypass it.
    for (const key of ["all", "default", "eth0"]) {
      lb.sysctl(`net.ipv4.conf.${key}.send_redirects`, "0");
      client.sysctl(`net.ipv4.conf.${key}.accept_redirects`, "0");
      client.sysctl(`net.ipv6.conf.${key}.accept_redirects`, "0");
    }
    lb.sysctl("net.ipv4.ip_forward", "1");
    lb.sysctl("net.ipv6.conf.all.forwarding", "1");
    return { topo, client, lb, targets, targetAddrs };
  } catch (err) {
    topo.destroy();
    throw err;
  }
}

/** Gives the targets the VIPs on lo and a direct route to the client (dsr). */
export function makeDsrTargets(t: LbTopology, vips: readonly string[]): void {
  for (const ns of t.targets) {
    for (const vip of vips) ns.exec("ip", ["addr", "add", vip, "dev", "lo"]);
    for (const key of ["all", "default", "eth0", "lo"]) {
      ns.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
      ns.sysctl(`net.ipv4.conf.${key}.arp_ignore`, "1");
      ns.sysctl(`net.ipv4.conf.${key}.arp_announce`, "2");
    }
  }
}
