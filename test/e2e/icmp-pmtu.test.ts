// ICMP through the load balancer, end to end, in DSR mode:
//  - path MTU discovery: a router on the way back to the client has a narrow link; it
//    answers the targets' full-size TCP segments with fragmentation-needed (IPv4) /
//    packet-too-big (IPv6), sent to the VIP, i.e. to the lb. nflb keys an ICMP error on
//    the packet it quotes, so the error reaches the target that owns the connection,
//    whose path MTU drops, and the transfer completes;
//  - the contrast: the same errors steered by their outer header (router -> VIP, as a
//    plain `jhash ip saddr . ip daddr` would) all land on one target, and the
//    connections of the others stall;
//  - ICMP echo to the VIP is answered, every echo of one client address by one target
//    (needs `ping`, Debian package iputils-ping);
//  - with `setup --proto tcp --ports ...` setup queues ICMP for the VIP by rules of its
//    own (errors and echo), so PMTU discovery and ping still work, and `nflb stats`
//    counts what those rules queued.
// Topology: test/helpers/pmtutopo.ts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { LbView, NO_SLOT } from "../../src/dataplane/lbview.js";
import { flowHash, infoFromTuple, PacketInfo } from "../../src/packet/index.js";
import { openState } from "../../src/state/store.js";
import { nflbIn, startDaemon, tryNflbIn } from "../helpers/daemon.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import {
  CLIENT4,
  CLIENT6,
  PMTU_V4,
  PMTU_V6,
  type PmtuTopology,
  pmtuTopology,
  VIP4,
  VIP6,
} from "../helpers/pmtutopo.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
/** Bytes each target sends per connection: ~140 full-size segments. */
const SIZE = 200_000;
/** Connections per target in each experiment. */
const PER_TARGET = 2;
/** A transfer that gets its ICMP error takes well under a second; this is the bound. */
const DONE_MS = 8_000;
/** How long a transfer without its ICMP error is watched before it counts as stalled. */
const STALL_MS = 3_000;

// A target's server: its name on a line of its own (a small first segment, which passes
// the narrow link, so even a stalled connection tells who owns it), then SIZE bytes of a
// pattern, then FIN.
const SERVER = String.raw`
import net from "node:net";
const [name, portText, sizeText] = process.argv.slice(1);
const payload = Buffer.alloc(Number(sizeText));
for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
const srv = net.createServer((s) => {
  s.on("error", () => {});
  s.write(name + "\n");
  s.end(payload);
});
srv.on("error", (e) => { console.error(String(e)); process.exit(1); });
srv.listen({ host: "::", port: Number(portText), ipv6Only: false }, () => process.stdout.write("ready\n"));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 600_000);
`;

// The client: one connection per source port, all at once; per connection the name that
// answered, the payload bytes received and checked, and whether it ended in time.
const CLIENT = `
import net from "node:net";
const o = JSON.parse(process.argv[1]);
function one(localPort) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let head = "";
    let name = "";
    let bytes = 0;
    let good = true;
    const s = net.connect({ host: o.host, port: o.port, localAddress: o.localAddress, localPort });
    const done = (end) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ localPort, name, bytes, good, end, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => done("timeout"), o.timeoutMs);
    s.on("data", (d) => {
      let at = 0;
      if (!name) {
        const nl = d.indexOf(10);
        if (nl < 0) { head += d.toString("latin1"); return; }
        name = head + d.subarray(0, nl).toString("latin1");
        at = nl + 1;
      }
      for (; at < d.length; at++, bytes++) if (d[at] !== bytes % 251) good = false;
    });
    s.on("end", () => done("fin"));
    s.on("error", (e) => done("error " + e.code));
  });
}
const results = await Promise.all(o.ports.map(one));
process.stdout.write(JSON.stringify(results));
`;

interface Transfer {
  localPort: number;
  name: string;
  bytes: number;
  good: boolean;
  end: string;
  ms: number;
}

function startServer(ns: Netns, name: string): Promise<() => void> {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", SERVER, name, String(PORT), String(SIZE)],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const stop = () => {
    child.stdin?.end();
    if (child.exitCode === null) child.kill("SIGTERM");
  };
  return new Promise((resolve, reject) => {
    let err = "";
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`server ${name} did not start: ${err}`));
    }, 10_000);
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.stdout?.on("data", (d) => {
      if (String(d).includes("ready")) {
        clearTimeout(timer);
        resolve(stop);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server ${name} exited (${code}): ${err}`));
    });
  });
}

function transfers(
  ns: Netns,
  o: { host: string; localAddress: string; ports: number[]; timeoutMs: number },
): Promise<Transfer[]> {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", CLIENT, JSON.stringify({ ...o, port: PORT })],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    // Every connection ends by its own timeout; this only guards against a hang.
    const guard = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs + 15_000);
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.on("exit", (code) => {
      clearTimeout(guard);
      if (code !== 0) reject(new Error(`client failed (${code}): ${err}`));
      else resolve(JSON.parse(out) as Transfer[]);
    });
  });
}

// Counters, read with `nft -j`: in the lb, ICMP PMTU errors for the VIP per mark after
// the daemon's verdict; in every target, PMTU errors and echo requests that arrive from
// the network. (Only those on eth0: a target whose path MTU just dropped also sends
// itself frag-needed over lo for the segments it had already built at the old size.)
const LB_OBSERVE = `
table inet pmtu_obs {
  counter err4_1 {}
  counter err4_2 {}
  counter err4_3 {}
  counter err4_0 {}
  counter err6_1 {}
  counter err6_2 {}
  counter err6_3 {}
  counter err6_0 {}
  chain pre {
    type filter hook prerouting priority mangle + 20; policy accept;
    ip daddr ${VIP4} icmp type destination-unreachable icmp code frag-needed meta mark vmap { 1 : jump e4_1, 2 : jump e4_2, 3 : jump e4_3 }
    ip daddr ${VIP4} icmp type destination-unreachable icmp code frag-needed counter name err4_0
    ip6 daddr ${VIP6} icmpv6 type packet-too-big meta mark vmap { 1 : jump e6_1, 2 : jump e6_2, 3 : jump e6_3 }
    ip6 daddr ${VIP6} icmpv6 type packet-too-big counter name err6_0
  }
  chain e4_1 { counter name err4_1; accept; }
  chain e4_2 { counter name err4_2; accept; }
  chain e4_3 { counter name err4_3; accept; }
  chain e6_1 { counter name err6_1; accept; }
  chain e6_2 { counter name err6_2; accept; }
  chain e6_3 { counter name err6_3; accept; }
}
`;

const TARGET_OBSERVE = `
table inet pmtu_obs {
  counter err4 {}
  counter err6 {}
  counter echo4 {}
  counter echo6 {}
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    iifname "eth0" ip daddr ${VIP4} icmp type destination-unreachable icmp code frag-needed counter name err4
    iifname "eth0" ip6 daddr ${VIP6} icmpv6 type packet-too-big counter name err6
    iifname "eth0" ip daddr ${VIP4} icmp type echo-request counter name echo4
    iifname "eth0" ip6 daddr ${VIP6} icmpv6 type echo-request counter name echo6
  }
}
`;

/** Packet counts of the named counters of table inet pmtu_obs in `ns`. */
function counters(ns: Netns): Record<string, number> {
  const json = JSON.parse(ns.exec("nft", ["-j", "list", "counters", "table", "inet", "pmtu_obs"]));
  const out: Record<string, number> = {};
  for (const item of json.nftables as Record<string, { name: string; packets: number }>[]) {
    if (item.counter) out[item.counter.name] = item.counter.packets;
  }
  return out;
}

const fam = {
  v4: {
    label: "IPv4",
    vip: VIP4,
    clients: CLIENT4,
    name: "pmtu4",
    queue: "5",
    pmtu: PMTU_V4,
    err: "err4",
    echo: "echo4",
    ip: "-4",
    ping: ["-4"],
  },
  v6: {
    label: "IPv6",
    vip: VIP6,
    clients: CLIENT6,
    name: "pmtu6",
    queue: "6",
    pmtu: PMTU_V6,
    err: "err6",
    echo: "echo6",
    ip: "-6",
    ping: ["-6"],
  },
} as const;
type Fam = (typeof fam)[keyof typeof fam];

const hostPort = (f: Fam, addr: string, port: number) =>
  f === fam.v6 ? `[${addr}]:${port}` : `${addr}:${port}`;

describe("ICMP through nflb (DSR): PMTU discovery and echo", { skip }, () => {
  let t: PmtuTopology;
  let stateDir = "";
  const cleanups: (() => unknown)[] = [];
  /** Source ports are never reused across experiments (TIME_WAIT, stalled leftovers). */
  let nextPort = 30000;

  const targetArgs = (f: Fam) =>
    t.targetAddrs.flatMap((a, i) => ["--target", `${i + 1}=${f === fam.v4 ? a.v4 : a.v6}`]);

  function setup(f: Fam, ...extra: string[]): void {
    nflbIn(
      t.lb,
      "setup",
      "--name",
      f.name,
      "--mode",
      "dsr",
      "--vip",
      f.vip,
      "--queue",
      f.queue,
      ...targetArgs(f),
      ...extra,
    );
  }

  /** The target (fwmark) that owns a flow, by the daemon's own classifier and table. */
  function owner(f: Fam, proto: string, src: string, sport: number, dport: number): number {
    const out = nflbIn(
      t.lb,
      "fwmark",
      "--name",
      f.name,
      "--proto",
      proto,
      "--src",
      hostPort(f, src, sport),
      "--dst",
      hostPort(f, f.vip, dport),
    );
    return Number(out.trim());
  }

  /**
   * PER_TARGET fresh source ports of `client` per target, and the target owning each:
   * `nflb fwmark`'s own code path (state file, LbView, infoFromTuple, flowHash) run here
   * for many candidate ports at once rather than one CLI call each. The transfers then
   * check every choice against the target that really answered.
   */
  function spreadPorts(f: Fam, client: string): Map<number, number> {
    const found = new Map<number, number[]>([
      [1, []],
      [2, []],
      [3, []],
    ]);
    const state = openState(f.name);
    try {
      const view = new LbView(state);
      view.refresh();
      const opts = {
        sctpPortsOnly: state.config.sctpPortsOnly,
        sctpEncapPort: state.config.sctpEncapPort,
      };
      const info = new PacketInfo();
      for (let tries = 0; tries < 100; tries++) {
        const port = nextPort++;
        infoFromTuple("tcp", client, port, f.vip, PORT, opts, info);
        const slot = view.slotFor(flowHash(info, view.hashSeed));
        assert.notEqual(slot, NO_SLOT);
        const list = found.get(view.fwmarkBySlot[slot]);
        assert.ok(list, `unexpected fwmark ${view.fwmarkBySlot[slot]}`);
        if (list.length < PER_TARGET) list.push(port);
        if ([...found.values()].every((l) => l.length === PER_TARGET)) break;
      }
    } finally {
      state.close();
    }
    const byPort = new Map<number, number>();
    for (const [mark, ports] of found) {
      assert.equal(ports.length, PER_TARGET, `found no ${PER_TARGET} ports for target ${mark}`);
      for (const p of ports) byPort.set(p, mark);
    }
    // And the CLI agrees (one flow: each call is a process).
    const [port, mark] = [...byPort][0];
    assert.equal(owner(f, "tcp", client, port, PORT), mark, "nflb fwmark");
    return byPort;
  }

  /** The path MTU towards `addr` in the route cache of target `i`, or undefined. */
  function cachedMtu(f: Fam, i: number, addr: string): number | undefined {
    const out = t.targets[i].exec("ip", [f.ip, "route", "get", addr, "from", f.vip]);
    const m = /\bmtu (\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  }

  const targetCounts = (key: string) => t.targets.map((ns) => counters(ns)[key] ?? 0);
  /** PMTU errors for the VIP in the lb after the verdict: [unmarked/other, mark 1, 2, 3]. */
  const lbCounts = (f: Fam) => {
    const c = counters(t.lb);
    return [0, 1, 2, 3].map((m) => c[`${f.err}_${m}`] ?? 0);
  };
  const minus = (a: number[], b: number[]) => a.map((x, i) => x - b[i]);
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

  /**
   * PMTU errors since `lb0` / `tg0`: [none, mark 1..3] after the lb's verdict and per
   * target. Errors can still sit in the daemon's queue after a transfer ended (the
   * retransmission outruns them), so read until what the lb let through has arrived.
   */
  async function errorsSince(f: Fam, lb0: number[], tg0: number[]) {
    let lb: number[] = [];
    let tg: number[] = [];
    for (let i = 0; i < 30; i++) {
      lb = minus(lbCounts(f), lb0);
      tg = minus(targetCounts(f.err), tg0);
      if (sum(lb.slice(1)) === sum(tg)) return { lb, tg };
      await sleep(100);
    }
    assert.fail(`errors marked by the lb ${lb} never all arrived at the targets: ${tg}`);
  }

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), "nflb-pmtu-"));
    process.env.NFLB_STATE_DIR = stateDir;
    t = pmtuTopology();
    cleanups.push(() => t.topo.destroy());
    t.lb.exec("nft", ["-f", "-"], LB_OBSERVE);
    for (const [i, ns] of t.targets.entries()) {
      ns.exec("nft", ["-f", "-"], TARGET_OBSERVE);
      cleanups.push(await startServer(ns, `t${i + 1}`));
    }
    for (const f of [fam.v4, fam.v6]) {
      // No --proto: every protocol to the VIP is queued, ICMP included (see the last tests).
      setup(f);
      cleanups.push(() => tryNflbIn(t.lb, "teardown", "--name", f.name));
      const d = await startDaemon(t.lb, "--name", f.name, "--queue", f.queue);
      cleanups.push(() => d.stop());
    }
  });

  after(async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning up
      }
    }
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  for (const f of [fam.v4, fam.v6]) {
    test(`${f.label}: each connection's PMTU error reaches its target; all transfers complete`, async (tc) => {
      const client = f.clients[0];
      const owners = spreadPorts(f, client);
      // Fresh namespaces: no target knows the narrow path yet.
      for (const i of [0, 1, 2]) assert.equal(cachedMtu(f, i, client), undefined, `t${i + 1}`);
      const lb0 = lbCounts(f);
      const tg0 = targetCounts(f.err);
      const t0 = Date.now();
      const res = await transfers(t.client, {
        host: f.vip,
        localAddress: client,
        ports: [...owners.keys()],
        timeoutMs: DONE_MS,
      });
      tc.diagnostic(
        `${res.length} transfers of ${SIZE} B in ${Date.now() - t0} ms: ${res.map((r) => `${r.name} ${r.ms}ms`).join(", ")}`,
      );
      for (const r of res) {
        const mark = owners.get(r.localPort);
        assert.deepEqual(
          { name: r.name, end: r.end, bytes: r.bytes, good: r.good },
          { name: `t${mark}`, end: "fin", bytes: SIZE, good: true },
          `connection from port ${r.localPort}`,
        );
      }
      const { lb, tg } = await errorsSince(f, lb0, tg0);
      tc.diagnostic(
        `PMTU errors marked by the daemon [none,1,2,3]: ${lb}; received by t1..t3: ${tg}`,
      );
      // The daemon marked every error for a target, and every target owning connections
      // got some (errorsSince: the targets received exactly what the lb forwarded).
      assert.equal(lb[0], 0, "errors left unmarked");
      for (const i of [0, 1, 2]) {
        assert.ok(lb[i + 1] > 0, `no error marked for target ${i + 1}`);
        assert.ok(tg[i] > 0, `no error reached t${i + 1}`);
      }
      // And each target learned the narrow path towards this client.
      for (const i of [0, 1, 2]) assert.equal(cachedMtu(f, i, client), f.pmtu, `t${i + 1}`);
    });

    test(`${f.label}: steered by the outer header instead, errors miss their connections, which stall`, async (tc) => {
      const client = f.clients[1];
      const owners = spreadPorts(f, client);
      // After the daemon's verdict, before routing: the mark a balancer would give that
      // hashes the outer addresses only (router . VIP: one value for every error here).
      const ip = f === fam.v4 ? "ip" : "ip6";
      const match =
        f === fam.v4
          ? `ip daddr ${f.vip} icmp type destination-unreachable icmp code frag-needed`
          : `ip6 daddr ${f.vip} icmpv6 type packet-too-big`;
      t.lb.exec(
        "nft",
        ["-f", "-"],
        `table inet pmtu_steer {
  chain pre {
    type filter hook prerouting priority mangle + 15; policy accept;
    ${match} meta mark set jhash ${ip} saddr . ${ip} daddr mod 3 offset 1
  }
}
`,
      );
      // Everything is checked while the steering is in place: without it, the stalled
      // connections' next retransmission would bring them their error after all.
      try {
        const lb0 = lbCounts(f);
        const tg0 = targetCounts(f.err);
        const res = await transfers(t.client, {
          host: f.vip,
          localAddress: client,
          ports: [...owners.keys()],
          timeoutMs: STALL_MS,
        });
        const { lb, tg } = await errorsSince(f, lb0, tg0);
        tc.diagnostic(`errors by mark [none,1,2,3]: ${lb}; received by t1..t3: ${tg}`);
        tc.diagnostic(res.map((r) => `${r.name}: ${r.end} ${r.bytes} B ${r.ms}ms`).join(", "));
        // One outer header, one target for all errors.
        const hit = [0, 1, 2].filter((i) => tg[i] > 0);
        assert.equal(hit.length, 1, `errors reached ${hit.map((i) => `t${i + 1}`)}`);
        const lucky = hit[0] + 1;
        assert.deepEqual(
          lb,
          [0, 1, 2, 3].map((m) => (m === lucky ? tg[hit[0]] : 0)),
        );
        for (const r of res) {
          const mark = owners.get(r.localPort);
          // Connection setup and the small first segment pass whatever the MTU: the name
          // arrives, then the full-size segments are lost at the router.
          assert.equal(r.name, `t${mark}`, `connection from port ${r.localPort}`);
          if (mark === lucky) {
            assert.deepEqual([r.end, r.bytes, r.good], ["fin", SIZE, true], `port ${r.localPort}`);
          } else {
            assert.equal(r.end, "timeout", `port ${r.localPort} (t${mark}) should stall`);
            assert.ok(r.bytes < SIZE, `port ${r.localPort}: ${r.bytes} B`);
          }
        }
        for (const i of [0, 1, 2]) {
          assert.equal(cachedMtu(f, i, client), i + 1 === lucky ? f.pmtu : undefined, `t${i + 1}`);
        }
      } finally {
        t.lb.exec("nft", ["delete", "table", "inet", "pmtu_steer"]);
      }
    });
  }

  for (const f of [fam.v4, fam.v6]) {
    test(`${f.label}: ping to the VIP is answered; one client address, one target`, async (tc) => {
      const seen = new Set<number>();
      const v = t.client.tryExec("ping", ["-V"]);
      assert.equal(v.status, 0, `ping (Debian package iputils-ping) is needed: ${v.stderr}`);
      for (const client of f.clients) {
        const expected = owner(f, f === fam.v4 ? "icmp" : "icmpv6", client, 0, 0);
        const before = targetCounts(f.echo);
        // Two runs: two ICMP identifiers, and still one target (the hash is on addresses).
        for (let run = 0; run < 2; run++) {
          const r = t.client.tryExec("ping", [
            ...f.ping,
            "-n",
            "-c",
            "3",
            "-i",
            "0.1",
            "-W",
            "2",
            "-w",
            "5",
            "-I",
            client,
            f.vip,
          ]);
          assert.equal(r.status, 0, `ping from ${client}: ${r.stdout}${r.stderr}`);
          assert.match(r.stdout, /3 packets transmitted, 3 received/);
        }
        const got = minus(targetCounts(f.echo), before);
        assert.deepEqual(
          got,
          [1, 2, 3].map((m) => (m === expected ? 6 : 0)),
          `echoes from ${client} by target (nflb fwmark says t${expected})`,
        );
        seen.add(expected);
      }
      tc.diagnostic(`${f.clients.length} client addresses answered by targets ${[...seen].sort()}`);
    });
  }

  for (const f of [fam.v4, fam.v6]) {
    test(`${f.label}: with --proto tcp --ports ${PORT}, PMTU errors still reach their target, and ping is answered`, async (tc) => {
      tryNflbIn(t.lb, "teardown", "--name", f.name);
      try {
        setup(f, "--proto", "tcp", "--ports", String(PORT));
        const client = f.clients[2];
        const owners = spreadPorts(f, client);
        const lb0 = lbCounts(f);
        const tg0 = targetCounts(f.err);
        const res = await transfers(t.client, {
          host: f.vip,
          localAddress: client,
          ports: [...owners.keys()],
          timeoutMs: DONE_MS,
        });
        tc.diagnostic(res.map((r) => `${r.name}: ${r.end} ${r.bytes} B ${r.ms}ms`).join(", "));
        for (const r of res) {
          const mark = owners.get(r.localPort);
          assert.deepEqual(
            { name: r.name, end: r.end, bytes: r.bytes, good: r.good },
            { name: `t${mark}`, end: "fin", bytes: SIZE, good: true },
            `connection from port ${r.localPort}`,
          );
        }
        const { lb, tg } = await errorsSince(f, lb0, tg0);
        tc.diagnostic(`PMTU errors marked [none,1,2,3]: ${lb}; received by t1..t3: ${tg}`);
        assert.equal(lb[0], 0, "errors left unmarked");
        for (const i of [0, 1, 2]) assert.ok(tg[i] > 0, `no error reached t${i + 1}`);

        // Ping: the echo rule queues it, the daemon hashes it on the addresses.
        const expected = owner(f, f === fam.v4 ? "icmp" : "icmpv6", client, 0, 0);
        const echo0 = targetCounts(f.echo);
        const r = t.client.tryExec("ping", [
          ...f.ping,
          "-n",
          "-c",
          "3",
          "-i",
          "0.1",
          "-W",
          "2",
          "-w",
          "5",
          "-I",
          client,
          f.vip,
        ]);
        assert.equal(r.status, 0, `ping from ${client}: ${r.stdout}${r.stderr}`);
        assert.deepEqual(
          minus(targetCounts(f.echo), echo0),
          [1, 2, 3].map((m) => (m === expected ? 3 : 0)),
        );

        // The rule counters: the ICMP rules' share of what was queued.
        const stats = JSON.parse(nflbIn(t.lb, "stats", "--name", f.name, "--json"));
        const rules = stats.rules as { queued: { packets: number }; icmp?: { packets: number } };
        tc.diagnostic(`rule counters: queued ${rules.queued.packets}, icmp ${rules.icmp?.packets}`);
        assert.ok(rules.icmp, "no icmp counter");
        assert.ok(rules.icmp.packets >= sum(tg) + 3, JSON.stringify(rules));
        assert.ok(rules.queued.packets > rules.icmp.packets, JSON.stringify(rules));
      } finally {
        tryNflbIn(t.lb, "teardown", "--name", f.name);
        setup(f);
      }
    });
  }
});
