// A load-balancer tier end to end (DSR, --fragments, `nflb lb --tier`, `setup --tier-peer`):
// two instances behind an ECMP router, each its own host (namespace, state directory,
// fwmark 101 / 102), three targets. Proves that
//   - both instances build identical Maglev tables (web and tier) although their targets
//     were activated in different orders and weights given in different commands;
//   - UDP (fragmented by a real socket and not) and TCP from many flows arrive whole, each
//     flow at the one target `nflb fwmark` names, on both instances alike, whichever
//     instance ECMP chose (the router hashes fragments on addresses only, flows on ports);
//   - fragments of one datagram split between the instances on purpose (crafted, steered
//     per packet by the router) still meet in one instance, the tier's owner of their
//     addresses: the other hands each over (counted exactly in `tierForwarded`, and by
//     setup's per-peer rule counter) and the datagram arrives whole.
// Topology: test/helpers/tiertopo.ts.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { LbView } from "../../src/dataplane/lbview.js";
import { addressHash, flowHash, infoFromTuple, PacketInfo } from "../../src/packet/index.js";
import { openState } from "../../src/state/store.js";
import { CLI } from "../helpers/cli.js";
import { internetChecksum, ipPacket, PROTO_UDP, udpDatagram } from "../helpers/craft.js";
import { type Daemon, startDaemon } from "../helpers/daemon.js";
import { fragmentPacket } from "../helpers/fragment.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import { startTargetServer, tcpRequests } from "../helpers/targets.js";
import {
  CLIENTS,
  CRAFTED_NET,
  LB_ADDRS,
  STEER_TTL,
  TARGET_ADDRS,
  type TierTopology,
  tierTopology,
  VIP,
} from "../helpers/tiertopo.js";
import { injectViaTun } from "../helpers/tun.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 9200;
const FWMARKS = [101, 102];
const SIZES = [3000, 4500, 6000, 8000, 10000];

// One JSON line per datagram received on the VIP: who sent it, how long it was.
const RECORDER = String.raw`
import dgram from "node:dgram";
const [name, port, addr] = process.argv.slice(1);
const s = dgram.createSocket({ type: "udp4", recvBufferSize: 1 << 20 });
s.on("message", (m, r) => process.stdout.write(JSON.stringify({ target: name, from: r.address, sport: r.port, len: m.length }) + "\n"));
s.on("error", (e) => { console.error(String(e)); process.exit(1); });
s.bind(Number(port), addr, () => process.stdout.write("ready\n"));
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 300_000);
`;

interface Arrival {
  target: string;
  from: string;
  sport: number;
  len: number;
}

function startRecorder(ns: Netns, name: string, arrivals: Arrival[]): Promise<ChildProcess> {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", RECORDER, name, String(PORT), VIP],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  let buf = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`recorder ${name} did not start`)), 10_000);
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (d: string) => {
      buf += d;
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === "ready") {
          clearTimeout(timer);
          resolve(child);
        } else arrivals.push(JSON.parse(line) as Arrival);
        i = buf.indexOf("\n");
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`recorder ${name} exited ${code}`));
    });
  });
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

/** One load-balancer instance: a host of its own (namespace, state directory, fwmark). */
interface Instance {
  label: string;
  ns: Netns;
  dir: string;
  fwmark: number;
  address: string;
}

/** `nflb ARGS` on an instance, with its own state directory. */
function nflbAt(inst: Instance, ...args: string[]): string {
  return inst.ns.exec("env", [`NFLB_STATE_DIR=${inst.dir}`, process.execPath, CLI, ...args]);
}

function tryNflbAt(inst: Instance, ...args: string[]) {
  return inst.ns.tryExec("env", [`NFLB_STATE_DIR=${inst.dir}`, process.execPath, CLI, ...args]);
}

/** Runs `fn` on an instance's state `name` (read here, as `nflb fwmark` does). */
function withView<T>(
  inst: Instance,
  name: string,
  fn: (
    view: LbView,
    info: PacketInfo,
    opts: { sctpPortsOnly: boolean; sctpEncapPort: number },
  ) => T,
): T {
  const saved = process.env.NFLB_STATE_DIR;
  process.env.NFLB_STATE_DIR = inst.dir;
  let state: ReturnType<typeof openState>;
  try {
    state = openState(name);
  } finally {
    process.env.NFLB_STATE_DIR = saved;
  }
  try {
    const view = new LbView(state);
    assert.ok(view.refresh(), "state busy");
    const opts = {
      sctpPortsOnly: state.config.sctpPortsOnly,
      sctpEncapPort: state.config.sctpEncapPort,
    };
    return fn(view, new PacketInfo(), opts);
  } finally {
    state.close();
  }
}

/** The target fwmark of a flow to the VIP, by the instance's own classifier and table. */
function flowTarget(inst: Instance, proto: "tcp" | "udp", src: string, sport: number): number {
  return withView(inst, "web", (view, info, opts) => {
    infoFromTuple(proto, src, sport, VIP, PORT, opts, info);
    return view.fwmarkBySlot[view.slotFor(flowHash(info, view.hashSeed))];
  });
}

/** The tier instance (fwmark) owning the fragments from `src` to the VIP. */
function tierOwner(inst: Instance, src: string): number {
  return withView(inst, "tier", (view, info, opts) => {
    infoFromTuple("udp", src, 1, VIP, PORT, opts, info);
    return view.fwmarkBySlot[view.slotFor(addressHash(info, view.hashSeed))];
  });
}

interface QueueStats {
  queue: number;
  packets: number;
  tierForwarded: number;
  fragments?: { firstSeen: number; stored: number; reinjected: number };
}
interface Stats {
  queues: QueueStats[];
  rules: {
    queued: { packets: number };
    fragments: { packets: number };
    targets: { fwmark: number; packets: number }[];
    peers: { fwmark: number; address: string; packets: number }[];
  };
}

const statsOf = (inst: Instance) =>
  JSON.parse(nflbAt(inst, "stats", "--name", "web", "--json")) as Stats;
const tierForwarded = (s: Stats) => s.queues.reduce((n, q) => n + q.tierForwarded, 0);

/** A copy of an IPv4 packet with the TTL that steers it to lb `lb` (0, 1). */
function steer(packet: Uint8Array, lb: number): Uint8Array {
  const p = Uint8Array.from(packet);
  p[8] = STEER_TTL[lb];
  p[10] = 0;
  p[11] = 0;
  const sum = internetChecksum(p.subarray(0, 20));
  p[10] = sum >> 8;
  p[11] = sum & 0xff;
  return p;
}

describe("load-balancer tier: two instances behind ECMP (DSR, fragments)", { skip }, () => {
  let t: TierTopology;
  let lbs: Instance[] = [];
  const arrivals: Arrival[] = [];
  const cleanups: (() => unknown)[] = [];
  /** Time to build the test bed: namespaces, servers, states, setups, daemons. */
  let readyMs = 0;

  /**
   * [target, length] of each datagram of a flow, shortest first: a flow's small and large
   * datagram may cross different instances (ECMP hashes fragments on addresses only), so
   * they need not arrive in the order sent.
   */
  const arrivalsOf = (from: string, sport: number) =>
    arrivals
      .filter((a) => a.from === from && a.sport === sport)
      .sort((a, b) => a.len - b.len)
      .map((a) => [a.target, a.len]);

  before(async () => {
    const t0 = Date.now();
    t = tierTopology();
    cleanups.push(() => t.topo.destroy());
    lbs = t.lbs.map((ns, i) => {
      const dir = mkdtempSync(join(tmpdir(), `nflb-tier${i + 1}-`));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      return { label: `lb${i + 1}`, ns, dir, fwmark: FWMARKS[i], address: LB_ADDRS[i] };
    });
    for (const [i, ns] of t.targets.entries()) {
      const recorder = await startRecorder(ns, `t${i + 1}`, arrivals);
      cleanups.push(() => recorder.stdin?.end());
      const tcp = await startTargetServer(ns, `t${i + 1}`, PORT, []);
      cleanups.push(() => tcp.stop());
    }
    // The same configuration, reached by different paths: lb1 activates 3 2 1 at once,
    // lb2 one by one, first with another weight (setup then sets the weights it is given).
    const [lb1, lb2] = lbs;
    for (const inst of lbs) {
      nflbAt(inst, "init", "--name", "web", "--ownfw", String(inst.fwmark));
      nflbAt(inst, "init", "--name", "tier");
    }
    nflbAt(lb1, "activate", "--name", "web", "3", "2", "1");
    nflbAt(lb2, "activate", "--name", "web", "--weight", "2", "2");
    nflbAt(lb2, "activate", "--name", "web", "3");
    nflbAt(lb2, "activate", "--name", "web", "1");
    nflbAt(lb1, "activate", "--name", "tier", "101", "102");
    nflbAt(lb2, "activate", "--name", "tier", "102");
    nflbAt(lb2, "activate", "--name", "tier", "101");
    for (const [i, inst] of lbs.entries()) {
      const peer = lbs[1 - i];
      nflbAt(
        inst,
        "setup",
        "--name",
        "web",
        "--mode",
        "dsr",
        "--vip",
        VIP,
        "--queue",
        "0",
        "--fragments",
        "--frag-queue",
        "1",
        ...TARGET_ADDRS.flatMap((a, k) => ["--target", `${k + 1}=${a}`]),
        "--tier-peer",
        `${peer.fwmark}=${peer.address}`,
      );
      cleanups.push(() => tryNflbAt(inst, "teardown", "--name", "web"));
      // startDaemon runs the CLI with this process's environment.
      const saved = process.env.NFLB_STATE_DIR;
      process.env.NFLB_STATE_DIR = inst.dir;
      let d: Daemon;
      try {
        d = await startDaemon(
          inst.ns,
          "--name",
          "web",
          "--queue",
          "0",
          "--frag-queue",
          "1",
          "--tier",
          "tier",
        );
      } finally {
        process.env.NFLB_STATE_DIR = saved;
      }
      cleanups.push(() => d.stop());
    }
    readyMs = Date.now() - t0;
  });

  after(async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning up
      }
    }
  });

  test("both instances build identical tables, whatever the order of activation", (tc) => {
    tc.diagnostic(`test bed (7 namespaces, 2 setups, 2 daemons) ready in ${readyMs} ms`);
    for (const name of ["web", "tier"]) {
      const [a, b] = lbs.map((inst) => JSON.parse(nflbAt(inst, "show", "--name", name, "--json")));
      assert.equal(a.tableDigest, b.tableDigest, `${name}: table digests differ`);
      assert.deepEqual(a.targets, b.targets);
      assert.deepEqual(
        a.targets.map((x: { fwmark: number; weight: number; active: boolean }) => [
          x.fwmark,
          x.weight,
          x.active,
        ]),
        name === "web"
          ? [
              [1, 1, true],
              [2, 1, true],
              [3, 1, true],
            ]
          : [
              [101, 1, true],
              [102, 1, true],
            ],
      );
    }
    // The slots really differ (lb1: 3 first; lb2: 2 first), the tables do not.
    const slots = lbs.map((inst) =>
      withView(inst, "web", (view) => Array.from(view.fwmarkBySlot.subarray(0, 3)).join(",")),
    );
    assert.deepEqual(slots, ["3,2,1", "2,3,1"]);
  });

  test("setup refuses an instance's own fwmark, or a target's, as a tier peer", () => {
    const [lb1] = lbs;
    const base = [
      "setup",
      "--name",
      "web",
      "--mode",
      "dsr",
      "--vip",
      VIP,
      "--fragments",
      "--target",
      `1=${TARGET_ADDRS[0]}`,
      "--dry-run",
    ];
    const own = tryNflbAt(lb1, ...base, "--tier-peer", `101=${LB_ADDRS[1]}`);
    assert.notEqual(own.status, 0);
    assert.match(own.stderr, /101 is this instance's own fwmark .*list only the other instances/);
    const clash = tryNflbAt(lb1, ...base, "--tier-peer", `1=${LB_ADDRS[1]}`);
    assert.notEqual(clash.status, 0);
    assert.match(clash.stderr, /fwmark 1 is also the fwmark of target 10\.72\.0\.21/);
  });

  test("real sockets: UDP (fragmented and not) and TCP from many flows, each whole at its flow's target", async (tc) => {
    const t0 = Date.now();
    const before = lbs.map(statsOf);
    // Per client address four flows: a small datagram, then a large one, from one port.
    const flows = CLIENTS.flatMap((src, a) =>
      [0, 1, 2, 3].map((k) => ({ src, sport: 36000 + k, size: SIZES[(a + k) % SIZES.length] })),
    );
    const script = `
      import dgram from "node:dgram";
      const [vip, port, flows] = process.argv.slice(1);
      for (const f of JSON.parse(flows)) {
        const s = dgram.createSocket("udp4");
        await new Promise((r) => s.bind(f.sport, f.src, r));
        await new Promise((r) => s.send(Buffer.alloc(100), Number(port), vip, r));
        await new Promise((r) => s.send(Buffer.alloc(f.size, 0x5a), Number(port), vip, r));
        s.close();
      }`;
    t.client.exec(process.execPath, [
      "--input-type=module",
      "-e",
      script,
      VIP,
      String(PORT),
      JSON.stringify(flows),
    ]);
    const done = await waitFor(
      () => flows.every((f) => arrivalsOf(f.src, f.sport).length >= 2),
      8000,
    );
    assert.ok(done, `missing arrivals: ${JSON.stringify(arrivals)}`);
    for (const f of flows) {
      const [m1, m2] = lbs.map((inst) => flowTarget(inst, "udp", f.src, f.sport));
      assert.equal(m1, m2, `instances disagree on ${f.src}:${f.sport}`);
      assert.deepEqual(
        arrivalsOf(f.src, f.sport),
        [
          [`t${m1}`, 100],
          [`t${m1}`, f.size],
        ],
        `udp flow ${f.src}:${f.sport}`,
      );
    }
    // The CLI agrees, on both instances.
    const f0 = flows[5];
    const cli = lbs.map((inst) =>
      nflbAt(
        inst,
        "fwmark",
        "--name",
        "web",
        "--proto",
        "udp",
        "--src",
        `${f0.src}:${f0.sport}`,
        "--dst",
        `${VIP}:${PORT}`,
      ).trim(),
    );
    assert.deepEqual(cli, [String(flowTarget(lbs[0], "udp", f0.src, f0.sport)), cli[0]]);

    // TCP: 8 connections per client address.
    let tcpCount = 0;
    for (const [a, src] of CLIENTS.entries()) {
      const firstPort = 37000 + 100 * a;
      const answers = await tcpRequests(t.client, {
        host: VIP,
        port: PORT,
        count: 8,
        firstPort,
        localAddress: src,
      });
      for (const [k, answer] of answers.entries()) {
        const [m1, m2] = lbs.map((inst) => flowTarget(inst, "tcp", src, firstPort + k));
        assert.equal(m1, m2, `instances disagree on tcp ${src}:${firstPort + k}`);
        assert.equal(answer, `t${m1}`, `tcp ${src}:${firstPort + k}`);
        tcpCount++;
      }
    }
    const after = lbs.map(statsOf);
    const normal = (s: Stats) => s.queues.find((q) => q.queue === 0)?.packets ?? 0;
    const fragQ = (s: Stats) => s.queues.find((q) => q.queue === 1)?.packets ?? 0;
    const spread = lbs.map((_, i) => normal(after[i]) - normal(before[i]));
    const frags = lbs.map((_, i) => fragQ(after[i]) - fragQ(before[i]));
    const handed = lbs.map((_, i) => tierForwarded(after[i]) - tierForwarded(before[i]));
    tc.diagnostic(
      `${flows.length} udp flows, ${tcpCount} tcp connections in ${Date.now() - t0} ms; normal-queue packets per lb ${spread}, fragment-queue packets ${frags}, handed to the peer ${handed}`,
    );
    // ECMP spread the flows: both instances balanced some, with identical tables.
    for (const [i, n] of spread.entries()) assert.ok(n > 0, `lb${i + 1} saw no flow`);
  });

  test("crafted fragments split between the instances meet in the tier's owner and arrive whole", async (tc) => {
    const t0 = Date.now();
    const sources = [1, 2, 3, 4, 5, 6, 7, 8].map((i) => `10.72.3.${i}`);
    const owners = sources.map((src) => {
      const [o1, o2] = lbs.map((inst) => tierOwner(inst, src));
      assert.equal(o1, o2, `instances disagree on the owner of ${src}`);
      assert.ok(FWMARKS.includes(o1), `owner ${o1}`);
      return FWMARKS.indexOf(o1);
    });
    tc.diagnostic(`tier owners: ${owners.map((o) => `lb${o + 1}`)}`);
    const packets: Uint8Array[] = [];
    const expectedHandOver = [0, 0];
    const datagrams = sources.map((src, d) => {
      const sport = 38000 + d;
      const size = [3000, 4500, 6000, 8000, 10000, 3500, 5500, 7000][d];
      const payload = new Uint8Array(size).map((_, i) => (i * 7 + d) & 0xff);
      // A small unfragmented one first, to the non-owner: handled there, locally.
      packets.push(
        steer(
          ipPacket(src, VIP, PROTO_UDP, udpDatagram(src, VIP, sport, PORT, new Uint8Array(64)), {
            id: 500 + d,
          }),
          1 - owners[d],
        ),
      );
      const whole = ipPacket(src, VIP, PROTO_UDP, udpDatagram(src, VIP, sport, PORT, payload), {
        id: 600 + d,
      });
      const frags = fragmentPacket(whole, 1400, 600 + d);
      // Alternate instances fragment by fragment; every other datagram last fragment first.
      const order =
        d % 2 === 0 ? frags.map((_, k) => k) : frags.map((_, k) => frags.length - 1 - k);
      for (const k of order) {
        const lb = (k + d) % 2;
        if (lb !== owners[d]) expectedHandOver[lb]++;
        packets.push(steer(frags[k], lb));
      }
      return { src, sport, size, fragments: frags.length };
    });
    const before = lbs.map(statsOf);
    const r = await injectViaTun(t.router, { routes: [CRAFTED_NET], packets, lingerMs: 500 });
    assert.equal(r.written, packets.length, JSON.stringify(r.errors));
    const done = await waitFor(
      () => datagrams.every((g) => arrivalsOf(g.src, g.sport).length >= 2),
      8000,
    );
    assert.ok(
      done,
      `missing arrivals: ${JSON.stringify(arrivals.filter((a) => a.from.startsWith("10.72.3.")))}`,
    );
    for (const g of datagrams) {
      const [m1, m2] = lbs.map((inst) => flowTarget(inst, "udp", g.src, g.sport));
      assert.equal(m1, m2);
      assert.deepEqual(
        arrivalsOf(g.src, g.sport),
        [
          [`t${m1}`, 64],
          [`t${m1}`, g.size],
        ],
        `crafted flow ${g.src}:${g.sport} (${g.fragments} fragments)`,
      );
    }
    const after = lbs.map(statsOf);
    const handed = lbs.map((_, i) => tierForwarded(after[i]) - tierForwarded(before[i]));
    tc.diagnostic(
      `${datagrams.length} datagrams, ${packets.length} packets in ${Date.now() - t0} ms; handed over per lb ${handed} (expected ${expectedHandOver}); held/re-injected per lb ${after.map((s) => s.queues.map((q) => `${q.fragments?.stored ?? 0}/${q.fragments?.reinjected ?? 0}`).join(" "))}`,
    );
    // Every fragment that reached the non-owner was handed over, and nothing else.
    assert.deepEqual(handed, expectedHandOver);
    assert.ok(handed.some((n) => n > 0));
    // setup's rule counter of the peer route counts exactly what the daemon handed over.
    for (const [i, s] of after.entries()) {
      assert.deepEqual(
        s.rules.peers.map((p) => [p.fwmark, p.address, p.packets]),
        [[lbs[1 - i].fwmark, lbs[1 - i].address, tierForwarded(s)]],
      );
    }
  });
});
