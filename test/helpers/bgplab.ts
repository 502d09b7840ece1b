// A BGP lab: a router running BIRD with multipath, and load-balancer instances, each
// with its own BIRD peering with the router and (optionally) an announcer process, the
// stand-in for `nflb run`. Everything lives in namespaces and a temporary directory made
// here; nothing touches the root namespace.
//
//   client ──── router ──── br0 (in "sw") ──── lb1, lb2, lb3 (and what a test attaches)
//
//   front 10.74.0.0/24 and fd74::/64 (with {client: true}): client .10 / ::10, router .1 / ::1.
//   LAN 10.73.0.0/24 and fd73::/64: router .1 / ::1, instance i at .(11+i) / ::(11+i).
//   The router's BIRD: kernel protocols with `merge paths` (one route, one next hop per
//   announcing instance), BFD, one session per instance and family (AS 65000 <-> 65001),
//   L4 multipath hashing (fib_multipath_hash_policy=1). Its BGP blocks come from the
//   product's renderer (renderBgpBlock), with a short connect delay and error wait for
//   quick tests.
//   Instance BIRD: an operator-like bird.conf (a device protocol and the include line);
//   the include itself is written by the announcer.
import { type ChildProcess, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { BgpSpec } from "../../src/bgp/index.js";
import { renderBgpBlock } from "../../src/bgp/index.js";
import { BirdDaemon } from "./bird.js";
import { link, type Netns, Topology } from "./netns.js";

export const ROUTER_ASN = 65000;
export const INSTANCE_ASN = 65001;
export const ROUTER4 = "10.73.0.1";
export const ROUTER6 = "fd73::1";
/** The client network in front of the router (bgpLab(n, {client: true})). */
export const CLIENT4 = "10.74.0.10";
export const CLIENT6 = "fd74::10";
export const ROUTER_FRONT4 = "10.74.0.1";
export const ROUTER_FRONT6 = "fd74::1";
export const instanceAddr4 = (i: number) => `10.73.0.${11 + i}`;
export const instanceAddr6 = (i: number) => `fd73::${11 + i}`;
/** BFD on every session of the lab: 100 ms x 3. */
export const LAB_BFD = { intervalMs: 100, multiplier: 3 };
export const LAB_HOLD_S = 9;

const HARNESS = fileURLToPath(new URL("./bgpharness.js", import.meta.url));

/** Announcer processes still running: killed when the test process exits. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of running) c.kill("SIGKILL");
});

export interface LabInstance {
  index: number;
  ns: Netns;
  addr4: string;
  addr6: string;
  bird: BirdDaemon;
  dir: string;
  /** The BgpSpec its announcer uses. */
  spec: BgpSpec;
}

export interface BgpLab {
  topo: Topology;
  dir: string;
  sw: Netns;
  router: Netns;
  routerBird: BirdDaemon;
  instances: LabInstance[];
  /** With `client: true`: a namespace behind the router (CLIENT4/CLIENT6, default via it). */
  client?: Netns;
  /** Attaches another namespace to the LAN (e.g. a target), with these addresses. */
  attach(ns: Netns, ifname: string, addrs: string[]): void;
  /** The switch port (in `sw`) of an attached namespace: set it down to cut that host off. */
  portOf(ns: Netns): string;
  destroy(): Promise<void>;
}

export function routerConf(count: number, bfd = true): string {
  const blocks: string[] = [];
  for (let i = 0; i < count; i++) {
    for (const family of [4, 6] as const) {
      blocks.push(
        renderBgpBlock({
          name: `lb${i + 1}_v${family}`,
          localAsn: ROUTER_ASN,
          neighbor: family === 4 ? instanceAddr4(i) : instanceAddr6(i),
          neighborAsn: INSTANCE_ASN,
          holdTimeS: LAB_HOLD_S,
          bfd: bfd ? LAB_BFD : undefined,
          // Quick (re)connection in tests; production keeps BIRD's defaults.
          options: ["connect delay time 1", "error wait time 1, 5"],
          channel: { family, import: "all", export: "none" },
        }),
      );
    }
  }
  return [
    `router id ${ROUTER4};`,
    "protocol device {\n}",
    // One kernel route per prefix with a next hop per BGP path (ECMP).
    "protocol kernel k4 {\n  ipv4 { import none; export all; };\n  merge paths yes limit 8;\n}",
    "protocol kernel k6 {\n  ipv6 { import none; export all; };\n  merge paths yes limit 8;\n}",
    "protocol bfd {\n}",
    ...blocks,
    "",
  ].join("\n\n");
}

/** The include line and a device protocol: the least an operator's bird.conf has. */
export function instanceConf(include: string): string {
  return `protocol device {\n}\n\ninclude "${include}";\n`;
}

export function instanceSpec(include: string, socket: string, bfd = true): BgpSpec {
  return {
    localAsn: INSTANCE_ASN,
    routerId: "10.73.0.254",
    neighbors: [
      { address: ROUTER4, asn: ROUTER_ASN, holdTimeS: LAB_HOLD_S, bfd: bfd ? LAB_BFD : undefined },
      { address: ROUTER6, asn: ROUTER_ASN, holdTimeS: LAB_HOLD_S, bfd: bfd ? LAB_BFD : undefined },
    ],
    bird: { socket, include },
  };
}

export async function bgpLab(count: number, options: { client?: boolean } = {}): Promise<BgpLab> {
  const topo = new Topology();
  const dir = mkdtempSync(join(tmpdir(), "nflb-bgplab-"));
  const daemons: BirdDaemon[] = [];
  const destroy = async () => {
    for (const d of daemons) await d.kill();
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const sw = topo.add("sw");
    const router = topo.add("rt");
    const nss = Array.from({ length: count }, (_, i) => topo.add(`lb${i + 1}`));
    const client = options.client ? topo.add("cl") : undefined;
    for (const ns of [sw, router, ...nss, ...(client ? [client] : [])]) {
      ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
      ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
    }
    sw.exec("ip", ["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    sw.exec("ip", ["link", "set", "br0", "up"]);
    const ports = new Map<string, string>();
    const attach = (ns: Netns, ifname: string, addrs: string[]) => {
      const port = `p${ports.size + 1}`;
      link(sw, port, [], ns, ifname, addrs);
      sw.exec("ip", ["link", "set", port, "master", "br0"]);
      ports.set(ns.name, port);
    };
    const portOf = (ns: Netns) => {
      const port = ports.get(ns.name);
      if (!port) throw new Error(`${ns.name} is not attached to the lab's switch`);
      return port;
    };
    attach(router, "lan", [`${ROUTER4}/24`, `${ROUTER6}/64`]);
    router.sysctl("net.ipv4.ip_forward", "1");
    router.sysctl("net.ipv6.conf.all.forwarding", "1");
    // Hash flows on addresses and ports: a connection stays on one instance.
    router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
    router.sysctl("net.ipv6.fib_multipath_hash_policy", "1");
    if (client) {
      link(client, "eth0", [`${CLIENT4}/24`, `${CLIENT6}/64`], router, "front", [
        `${ROUTER_FRONT4}/24`,
        `${ROUTER_FRONT6}/64`,
      ]);
      client.exec("ip", ["route", "add", "default", "via", ROUTER_FRONT4]);
      client.exec("ip", ["-6", "route", "add", "default", "via", ROUTER_FRONT6]);
    }

    const routerDir = join(dir, "rt");
    mkdirSync(routerDir);
    const routerBird = new BirdDaemon(router, routerDir);
    daemons.push(routerBird);
    routerBird.writeConf(routerConf(count));

    const instances: LabInstance[] = nss.map((ns, i) => {
      attach(ns, "eth0", [`${instanceAddr4(i)}/24`, `${instanceAddr6(i)}/64`]);
      const idir = join(dir, `lb${i + 1}`);
      mkdirSync(idir);
      const bird = new BirdDaemon(ns, idir);
      daemons.push(bird);
      const include = join(idir, "nflb.conf");
      bird.writeConf(instanceConf(include));
      // BIRD refuses to start while its include is missing; the announcer rewrites it.
      execFileSync("touch", [include]);
      return {
        index: i,
        ns,
        addr4: instanceAddr4(i),
        addr6: instanceAddr6(i),
        bird,
        dir: idir,
        spec: instanceSpec(include, bird.socket),
      };
    });
    await routerBird.start();
    for (const inst of instances) await inst.bird.start();
    return { topo, dir, sw, router, routerBird, instances, client, attach, portOf, destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}

// ---- the announcer process ---------------------------------------------------------------

/** Replies of the harness (bgpharness.ts), loosely typed for assertions. */
// biome-ignore lint/suspicious/noExplicitAny: test replies are JSON read by assertions
export type HarnessReply = any;

export class Announcer {
  private readonly queue: ((line: HarnessReply) => void)[] = [];
  private readonly pending: HarnessReply[] = [];
  private stderrText = "";

  private constructor(readonly child: ChildProcess) {
    const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.on("line", (line) => {
      const msg = JSON.parse(line);
      const waiter = this.queue.shift();
      if (waiter) waiter(msg);
      else this.pending.push(msg);
    });
    child.stderr?.on("data", (d) => {
      this.stderrText = (this.stderrText + d).slice(-4000);
    });
    running.add(child);
    child.on("exit", () => running.delete(child));
  }

  /** Starts the harness in `ns`; resolves with its "started" line. */
  static async start(
    ns: Netns,
    input: { spec: BgpSpec; device?: string; birdc?: string },
  ): Promise<{ announcer: Announcer; started: HarnessReply }> {
    const child = ns.spawn(process.execPath, [HARNESS, JSON.stringify(input)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const a = new Announcer(child);
    const started = await a.next();
    return { announcer: a, started };
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get stderr(): string {
    return this.stderrText;
  }

  private next(timeoutMs = 20_000): Promise<HarnessReply> {
    const ready = this.pending.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`announcer ${this.pid}: no reply (stderr: ${this.stderrText})`)),
        timeoutMs,
      );
      const onExit = () => {
        clearTimeout(timer);
        reject(new Error(`announcer ${this.pid} exited (stderr: ${this.stderrText})`));
      };
      this.child.once("exit", onExit);
      this.queue.push((msg) => {
        clearTimeout(timer);
        this.child.off("exit", onExit);
        resolve(msg);
      });
    });
  }

  send(cmd: Record<string, unknown>): Promise<HarnessReply> {
    this.child.stdin?.write(`${JSON.stringify(cmd)}\n`);
    return this.next();
  }

  /** Waits for the process to exit (bounded). */
  async exited(timeoutMs = 5000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("announcer did not exit")), timeoutMs);
      this.child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.child.kill(signal);
  }
}

// ---- looking at the router -----------------------------------------------------------------

/** The next hops of the router's kernel route to `prefix` ([] when there is none). */
export function nextHops(router: Netns, prefix: string): string[] {
  const family = prefix.includes(":") ? "-6" : "-4";
  let out: string;
  try {
    out = execFileSync("ip", ["-n", router.name, "-j", family, "route", "show", prefix], {
      encoding: "utf8",
      timeout: 5000,
    });
  } catch {
    return [];
  }
  const routes = JSON.parse(out || "[]") as {
    gateway?: string;
    nexthops?: { gateway?: string }[];
  }[];
  const hops: string[] = [];
  for (const r of routes) {
    if (r.gateway) hops.push(r.gateway);
    for (const n of r.nexthops ?? []) if (n.gateway) hops.push(n.gateway);
  }
  return hops.sort();
}

/**
 * Polls until `check(nextHops)` holds; returns the milliseconds from `t0`
 * (performance.now()) to the first poll that saw it. Throws after `timeoutMs`.
 */
export async function waitForHops(
  router: Netns,
  prefix: string,
  check: (hops: string[]) => boolean,
  t0: number,
  timeoutMs = 10_000,
): Promise<number> {
  const deadline = t0 + timeoutMs;
  let last: string[] = [];
  while (performance.now() < deadline) {
    last = nextHops(router, prefix);
    if (check(last)) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(
    `router's route to ${prefix}: still ${JSON.stringify(last)} after ${timeoutMs} ms`,
  );
}

/** Waits until every named BGP protocol of `bird` is Established (bounded). */
export async function waitEstablished(
  bird: BirdDaemon,
  names: readonly string[],
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const p = bird.protocols();
    const missing = names.filter((n) => !p.get(n)?.info.startsWith("Established"));
    if (missing.length === 0) return;
    last = missing.map((n) => `${n}: ${p.get(n)?.info ?? "absent"}`).join(", ");
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`BGP sessions not established within ${timeoutMs} ms: ${last}`);
}

// ---- a device held by hand -----------------------------------------------------------------

const ADDON = fileURLToPath(new URL("../../src/native/addon.js", import.meta.url));

// Opens a TUN device (left down), says "held"; "up" on stdin sets it up and says "up".
const HOLD_SCRIPT = `
import { execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
const { loadAddon } = await import(process.argv[1]);
const t = loadAddon().tunOpen(process.argv[2]);
process.stdout.write("held\\n");
for await (const line of createInterface({ input: process.stdin })) {
  if (line === "up") execFileSync("ip", ["link", "set", "dev", t.name, "up"]);
  process.stdout.write(line + "\\n");
}
`;

/**
 * Holds a TUN device named `name` in `ns` from another process, as an announcer would,
 * without announcing anything itself: to look at what BIRD does with a device that is
 * held but down, then up. close() ends the process (and so the device).
 */
export async function holdDevice(
  ns: Netns,
  name: string,
): Promise<{ setUp(): Promise<void>; close(): Promise<void> }> {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", HOLD_SCRIPT, ADDON, name],
    {
      stdio: ["pipe", "pipe", "pipe"],
    },
  );
  running.add(child);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[
    Symbol.asyncIterator
  ]();
  const expect = async (what: string) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    const r = await lines.next();
    clearTimeout(timer);
    if (r.done || r.value !== what)
      throw new Error(`device holder: expected ${what}, got ${r.value}`);
  };
  await expect("held");
  return {
    async setUp() {
      child.stdin?.write("up\n");
      await expect("up");
    },
    async close() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
