// SCTP through nflb end to end (DSR): crafted SCTP packets, native and over UDP (RFC 6951),
// written into a TUN device in the client namespace, forwarded to the lb, queued, marked by
// `nflb lb` and routed to a target, where nft counters count them per association and
// source address. A multihomed association sends from two addresses with the same ports:
// with the default ports-only hash both reach one target; with --no-sctp-ports-only some
// associations split, exactly those `nflb fwmark` says.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { CLI } from "../helpers/cli.js";
import {
  crc32c,
  dataChunk,
  heartbeatChunk,
  initChunk,
  internetChecksum,
  type SctpOptions,
  sctpInIp,
  sctpInUdp,
  sctpPacket,
} from "../helpers/craft.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { makeDsrTargets } from "../helpers/targets.js";
import { injectViaTun } from "../helpers/tun.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

const ENCAP_PORT = 9899;
/** Associations per scenario, ASSOC_PER_TARGET for each of the 3 targets. */
const ASSOC_PER_TARGET = 4;
/** Port pairs tried at most when picking associations. */
const MAX_CANDIDATES = 60;
/** `nflb fwmark` runs at once (each is a node start). */
const FWMARK_PARALLEL = 6;
/** Packets per association and source address. */
const PER_ADDRESS = 3;

// The multihomed client: two addresses per family behind a TUN device in the client
// namespace, which forwards them to the lb like a router in front of the client would.
const SOURCES = {
  v4: { addrs: ["10.100.7.1", "10.100.8.1"], routes: ["10.100.7.0/24", "10.100.8.0/24"] },
  v6: { addrs: ["fd00:107::1", "fd00:108::1"], routes: ["fd00:107::/64", "fd00:108::/64"] },
} as const;

interface Scenario {
  /** Load balancer name (also names the counter table in the targets). */
  name: string;
  init: string[];
  family: "v4" | "v6";
  vip: string;
  queue: number;
  /** Target i (0..2) gets fwmark markBase + i + 1. */
  markBase: number;
  /** First SCTP source port; destination ports cycle over 2905..2908. */
  portBase: number;
  encap: boolean;
  /** SCTP hashed on ports only (the default; --no-sctp-ports-only clears it). */
  portsOnly: boolean;
}

interface Association {
  sport: number;
  dport: number;
  /** The target per source address by `nflb fwmark` (ports-only: asked once, for both). */
  marks: number[];
}

/** The rule text of an address in nft. */
const nftAddr = (a: string) => (a.includes(":") ? `ip6 saddr ${a}` : `ip saddr ${a}`);
const nftDst = (a: string) => (a.includes(":") ? `ip6 daddr ${a}` : `ip daddr ${a}`);
const endpoint = (a: string, port: number) => (a.includes(":") ? `[${a}]:${port}` : `${a}:${port}`);

describe("SCTP through nflb (DSR): multihoming and SCTP over UDP", { skip }, () => {
  let f: LbFixture;

  before(() => {
    f = LbFixture.create();
    const { client, lb, targets } = f.topology;
    makeDsrTargets(f.topology, [
      "10.200.0.1/32",
      "10.200.0.2/32",
      "10.200.0.3/32",
      "fd00:200::1/128",
      "fd00:200::2/128",
      "fd00:200::3/128",
    ]);
    // The client namespace routes the TUN's packets on to the lb.
    client.sysctl("net.ipv4.ip_forward", "1");
    client.sysctl("net.ipv6.conf.all.forwarding", "1");
    for (const key of ["all", "default"]) client.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
    // The lb knows the way back to the crafted sources (for its reverse path check).
    for (const fam of ["v4", "v6"] as const) {
      const via = fam === "v4" ? "10.100.1.10" : "fd00:101::10";
      for (const r of SOURCES[fam].routes) lb.exec("ip", ["route", "add", r, "via", via]);
    }
    // Resolve neighbours first, so no injected packet waits in an unresolved queue.
    client.exec("ping", ["-c1", "-W2", "10.100.1.1"]);
    client.exec("ping", ["-6", "-c1", "-W2", "fd00:101::1"]);
    for (const t of f.topology.targetAddrs) {
      lb.exec("ping", ["-c1", "-W2", t.v4]);
      lb.exec("ping", ["-6", "-c1", "-W2", t.v6]);
    }
    assert.equal(targets.length, 3);
  });

  after(() => f?.close());

  /** `nflb fwmark --proto sctp` of src:sport -> vip:dport (for encap: the inner ports). */
  function fwmark(s: Scenario, src: string, sport: number, dport: number): Promise<number> {
    const args = [
      "--proto",
      "sctp",
      "--src",
      endpoint(src, sport),
      "--dst",
      endpoint(s.vip, dport),
    ];
    const cmd = ["netns", "exec", f.topology.lb.name, process.execPath, CLI, "fwmark"];
    return new Promise((resolve, reject) => {
      execFile("ip", [...cmd, "--name", s.name, ...args], { timeout: 30_000 }, (err, out, e) => {
        const mark = Number(out.trim());
        if (err || out.trim() === "" || !Number.isInteger(mark) || mark <= s.markBase) {
          const why = `stdout "${out.trim()}", stderr "${e.trim()}", ${err ?? "exit 0"}`;
          reject(new Error(`nflb fwmark ${args.join(" ")}: ${why}`));
        } else {
          resolve(mark);
        }
      });
    });
  }

  /**
   * Port pairs in order, ASSOC_PER_TARGET kept per target (by the first address's mark),
   * so every target is used whatever the table. The 5-tuple hash asks nflb fwmark for
   * both addresses; the ports-only hash ignores addresses, so the association's one mark
   * is expected from both (the traffic then shows whether it is).
   */
  async function pickAssociations(s: Scenario): Promise<Association[]> {
    const addrs = SOURCES[s.family].addrs;
    const ask = s.portsOnly ? addrs.slice(0, 1) : addrs;
    const perTarget = new Map<number, number>();
    const chosen: Association[] = [];
    const want = 3 * ASSOC_PER_TARGET;
    const step = FWMARK_PARALLEL / ask.length;
    for (let k = 0; k < MAX_CANDIDATES && chosen.length < want; k += step) {
      const batch = Array.from({ length: Math.min(step, MAX_CANDIDATES - k) }, (_, b) => ({
        sport: s.portBase + k + b,
        dport: 2905 + ((k + b) % 4),
      }));
      const marks = await Promise.all(
        batch.map((c) => Promise.all(ask.map((a) => fwmark(s, a, c.sport, c.dport)))),
      );
      batch.forEach((c, b) => {
        const m0 = marks[b][0];
        if (chosen.length >= want || (perTarget.get(m0) ?? 0) >= ASSOC_PER_TARGET) return;
        perTarget.set(m0, (perTarget.get(m0) ?? 0) + 1);
        chosen.push({ ...c, marks: addrs.map((_, j) => marks[b][j] ?? m0) });
      });
    }
    assert.equal(chosen.length, want, `marks seen: ${JSON.stringify([...perTarget])}`);
    return chosen;
  }

  /** In every target, a counter per (association, address) that also drops what it counts. */
  function installCounters(s: Scenario, assocs: readonly Association[]): string {
    const table = `sctp_${s.name}`;
    const addrs = SOURCES[s.family].addrs;
    const lines = [`table inet ${table} {`, "  counter other {}"];
    const rules: string[] = [];
    assocs.forEach((a, i) => {
      addrs.forEach((addr, j) => {
        lines.push(`  counter c_${i}_${j} {}`);
        const l4 = s.encap
          ? `udp dport ${ENCAP_PORT} @th,64,16 ${a.sport} @th,80,16 ${a.dport}`
          : `sctp sport ${a.sport} sctp dport ${a.dport}`;
        rules.push(`${nftAddr(addr)} ${nftDst(s.vip)} ${l4} counter name "c_${i}_${j}" drop`);
      });
    });
    // Anything else for this VIP (a packet mangled on the way) is counted too.
    rules.push(`${nftDst(s.vip)} counter name "other" drop`);
    lines.push(
      "  chain pre {",
      "    type filter hook prerouting priority raw; policy accept;",
      ...rules.map((r) => `    ${r}`),
      "  }",
      "}",
    );
    for (const t of f.topology.targets) t.exec("nft", ["-f", "-"], `${lines.join("\n")}\n`);
    return table;
  }

  /** counters[target][name] = packets. */
  function readCounters(table: string): Record<string, number>[] {
    return f.topology.targets.map((t) => {
      const json = JSON.parse(
        t.exec("nft", ["-j", "list", "counters", "table", "inet", table]),
      ) as {
        nftables: { counter?: { name: string; packets: number } }[];
      };
      const c: Record<string, number> = {};
      for (const item of json.nftables)
        if (item.counter) c[item.counter.name] = item.counter.packets;
      return c;
    });
  }

  /** The packets of association i from source address j, in the order they are sent. */
  function packetsOf(s: Scenario, a: Association, i: number, j: number): Uint8Array[] {
    const addrs = SOURCES[s.family].addrs;
    const src = addrs[j];
    const peerTag = 0x5c7a0000 + i; // the server's tag, from its INIT ACK
    const sctp = (vtag: number, chunk: Uint8Array): SctpOptions => ({
      sport: a.sport,
      dport: a.dport,
      vtag,
      chunks: [chunk],
    });
    const data = (tsn: number) =>
      dataChunk({
        tsn,
        stream: 0,
        ssn: tsn - 1000,
        ppid: 3,
        data: new TextEncoder().encode(`m${tsn}`),
      });
    const hb = heartbeatChunk(new TextEncoder().encode(`hb ${src} ${i}`));
    const chunks: [number, Uint8Array][] =
      j === 0
        ? [
            [0, initChunk({ initiateTag: 0x1000 + i, initialTsn: 1000, addresses: addrs })],
            [peerTag, data(1000)],
            [peerTag, hb],
          ]
        : [
            [peerTag, hb],
            [peerTag, data(1001)],
            [peerTag, data(1002)],
          ];
    return chunks.map(([vtag, chunk]) =>
      s.encap
        ? // Over a NAT the second path's UDP source port differs: only the inner ports count.
          sctpInUdp(src, s.vip, j === 0 ? ENCAP_PORT : 30000 + i, ENCAP_PORT, sctp(vtag, chunk))
        : sctpInIp(src, s.vip, sctp(vtag, chunk)),
    );
  }

  interface Outcome {
    /** Per association and address: the index of the one target all its packets reached. */
    reached: number[][];
    /** The same by `nflb fwmark`. */
    expected: number[][];
    perTarget: number[];
    /** Milliseconds per phase: setup (init, rules, daemon), fwmark, traffic (inject, count), stats. */
    ms: Record<string, number>;
  }

  /** Sets up the load balancer, sends every association from both addresses, checks arrivals. */
  async function run(s: Scenario): Promise<{ assocs: Association[]; outcome: Outcome }> {
    const ms: Record<string, number> = {};
    let mark = Date.now();
    const phase = (name: string) => {
      ms[name] = Date.now() - mark;
      mark = Date.now();
    };
    f.nflb("init", "--name", s.name, ...s.init);
    const targetArgs = f.topology.targetAddrs.flatMap((a, i) => [
      "--target",
      `${s.markBase + i + 1}=${a[s.family]}`,
    ]);
    f.setup(s.name, "--mode", "dsr", "--vip", s.vip, "--queue", String(s.queue), ...targetArgs);
    await f.daemon(s.name, String(s.queue));
    phase("setup");
    const assocs = await pickAssociations(s);
    phase("fwmark");
    const table = installCounters(s, assocs);

    const rounds: Uint8Array[][] = [];
    assocs.forEach((a, i) => {
      for (let j = 0; j < 2; j++) rounds.push(packetsOf(s, a, i, j));
    });
    // Interleaved: first packet of every (association, address), then the second, ...
    const packets: Uint8Array[] = [];
    for (let r = 0; r < PER_ADDRESS; r++) for (const list of rounds) packets.push(list[r]);
    const total = packets.length;
    const tun = await injectViaTun(f.topology.client, {
      routes: SOURCES[s.family].routes,
      packets,
    });
    assert.deepEqual(tun.errors, []);
    assert.equal(tun.written, total);
    assert.equal(tun.rx, total);

    // Wait (bounded) until every packet has been counted somewhere.
    let counters = readCounters(table);
    const sum = () => counters.reduce((n, c) => n + Object.values(c).reduce((x, y) => x + y, 0), 0);
    for (const deadline = Date.now() + 5000; sum() < total && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 100));
      counters = readCounters(table);
    }
    await new Promise((r) => setTimeout(r, 100)); // late duplicates would show now
    counters = readCounters(table);
    for (const [t, c] of counters.entries())
      assert.equal(c.other, 0, `target ${t + 1}: uncounted packets`);

    const reached: number[][] = [];
    const expected: number[][] = [];
    const perTarget = [0, 0, 0];
    assocs.forEach((a, i) => {
      reached.push([]);
      expected.push([]);
      for (let j = 0; j < 2; j++) {
        const name = `c_${i}_${j}`;
        const counts = counters.map((c) => c[name] ?? 0);
        const where = counts.flatMap((n, t) => (n > 0 ? [t] : []));
        const detail = `${s.name} association ${a.sport}->${a.dport} from ${SOURCES[s.family].addrs[j]}: per target ${counts}`;
        assert.equal(where.length, 1, `${detail}: expected one target`);
        assert.equal(counts[where[0]], PER_ADDRESS, `${detail}: expected ${PER_ADDRESS} packets`);
        reached[i].push(where[0]);
        expected[i].push(a.marks[j] - s.markBase - 1);
        perTarget[where[0]] += PER_ADDRESS;
      }
    });
    phase("traffic");
    // What the daemon saw: every packet once, each marked, none invalid.
    let stats = JSON.parse(f.nflb("stats", "--name", s.name, "--json")) as StatsJson;
    for (const deadline = Date.now() + 3000; marked(stats) < total && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 100));
      stats = JSON.parse(f.nflb("stats", "--name", s.name, "--json")) as StatsJson;
    }
    const q = stats.queues.find((x) => x.queue === s.queue);
    assert.ok(q, JSON.stringify(stats.queues));
    assert.equal(q.packets, total);
    assert.equal(q.marked, total);
    assert.equal(q.invalidDropped + q.invalidAccepted, 0);
    const byMark = Object.fromEntries(stats.targets.map((t) => [t.fwmark, t.packets]));
    assert.deepEqual(
      [1, 2, 3].map((i) => byMark[s.markBase + i] ?? 0),
      perTarget,
      "daemon's per-target counts vs the targets' counters",
    );
    phase("stats");
    return { assocs, outcome: { reached, expected, perTarget, ms } };
  }

  interface StatsJson {
    queues: {
      queue: number;
      packets: number;
      marked: number;
      invalidDropped: number;
      invalidAccepted: number;
    }[];
    targets: { fwmark: number; packets: number }[];
  }
  const marked = (s: StatsJson) => s.queues.reduce((n, q) => n + q.marked, 0);

  /** Ports-only: both addresses of every association at the one target nflb fwmark names. */
  function assertMultihomed(s: Scenario, assocs: Association[], o: Outcome): void {
    for (const [i, [t0, t1]] of o.reached.entries()) {
      const a = assocs[i];
      assert.equal(
        t0,
        t1,
        `${s.name}: association ${a.sport}->${a.dport} split over targets ${t0 + 1} and ${t1 + 1}`,
      );
    }
    assert.deepEqual(o.reached, o.expected, `${s.name}: targets reached vs nflb fwmark`);
    assert.deepEqual(
      o.perTarget,
      [1, 1, 1].map(() => ASSOC_PER_TARGET * 2 * PER_ADDRESS),
      `${s.name}: every target used`,
    );
  }

  for (const [family, vip, queue] of [
    ["v4", "10.200.0.1", 21],
    ["v6", "fd00:200::1", 22],
  ] as const) {
    test(`${family}: ports-only (default): a multihomed association stays on one target`, async (t) => {
      const s: Scenario = {
        name: `po${family}`,
        init: [],
        family,
        vip,
        queue,
        markBase: 0,
        portBase: 40000,
        encap: false,
        portsOnly: true,
      };
      const { assocs, outcome } = await run(s);
      assertMultihomed(s, assocs, outcome);
      t.diagnostic(
        `${s.name}: ${outcome.perTarget} packets per target, ${JSON.stringify(outcome.ms)} ms`,
      );
    });
  }

  for (const [family, vip, queue] of [
    ["v4", "10.200.0.2", 23],
    ["v6", "fd00:200::2", 24],
  ] as const) {
    test(`${family}: --no-sctp-ports-only: the two addresses split where nflb fwmark says`, async (t) => {
      const s: Scenario = {
        name: `ft${family}`,
        init: ["--no-sctp-ports-only"],
        family,
        vip,
        queue,
        markBase: 10,
        portBase: 41000,
        encap: false,
        portsOnly: false,
      };
      const { assocs, outcome } = await run(s);
      const splits = assocs.flatMap((a, i) => (a.marks[0] !== a.marks[1] ? [i] : []));
      assert.ok(splits.length > 0, `${s.name}: no association splits by nflb fwmark`);
      // Exact: every (association, address) where nflb fwmark says, so exactly these split.
      assert.deepEqual(
        outcome.reached,
        outcome.expected,
        `${s.name}: targets reached vs nflb fwmark`,
      );
      const reachedSplits = outcome.reached.flatMap(([t0, t1], i) => (t0 !== t1 ? [i] : []));
      assert.deepEqual(reachedSplits, splits);
      t.diagnostic(
        `${s.name}: ${splits.length}/${assocs.length} associations split, ${JSON.stringify(outcome.ms)} ms`,
      );
    });
  }

  for (const [family, vip, queue] of [
    ["v4", "10.200.0.3", 25],
    ["v6", "fd00:200::3", 26],
  ] as const) {
    test(`${family}: SCTP over UDP ${ENCAP_PORT}: hashed on the inner ports, one target per association`, async (t) => {
      const s: Scenario = {
        name: `en${family}`,
        init: ["--sctp-encap", String(ENCAP_PORT)],
        family,
        vip,
        queue,
        markBase: 20,
        portBase: 42000,
        encap: true,
        portsOnly: true,
      };
      const { assocs, outcome } = await run(s);
      assertMultihomed(s, assocs, outcome);
      t.diagnostic(
        `${s.name}: ${outcome.perTarget} packets per target, ${JSON.stringify(outcome.ms)} ms`,
      );
    });
  }
});

test("craft: CRC32c, IPv4 header and UDP checksums", () => {
  // CRC32c check value, and RFC 3720 B.4: 32 zero bytes -> aa 36 91 8a on the wire.
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  const sctp: SctpOptions = {
    sport: 5000,
    dport: 2905,
    vtag: 0,
    chunks: [initChunk({ initiateTag: 1, initialTsn: 7, addresses: ["10.0.0.1", "fd00::1"] })],
  };
  const p = sctpPacket(sctp);
  const v = new DataView(p.buffer);
  assert.equal(p.length, 12 + 20 + 8 + 20);
  const stored = v.getUint32(8, true);
  v.setUint32(8, 0);
  assert.equal(crc32c(p), stored);
  // IPv4: the header sums to 0xffff (checksum 0 over it); SCTP inside.
  const ip4 = sctpInIp("10.100.7.1", "10.200.0.1", sctp);
  assert.equal(internetChecksum(ip4.subarray(0, 20)), 0);
  assert.equal(ip4[9], 132);
  assert.equal(new DataView(ip4.buffer).getUint16(2), ip4.length);
  // UDP over IPv6: the checksum verifies over the pseudo-header.
  const ip6 = sctpInUdp("fd00:107::1", "fd00:200::3", 9899, 9899, sctp);
  assert.equal(ip6[0] >> 4, 6);
  assert.equal(ip6[6], 17);
  const udp = ip6.subarray(40);
  const pseudo = new Uint8Array(40);
  pseudo.set(ip6.subarray(8, 40), 0);
  new DataView(pseudo.buffer).setUint32(32, udp.length);
  pseudo[39] = 17;
  const all = new Uint8Array(pseudo.length + udp.length);
  all.set(pseudo);
  all.set(udp, pseudo.length);
  assert.equal(internetChecksum(all), 0);
  assert.equal(new DataView(udp.buffer, udp.byteOffset).getUint16(8), 5000); // inner SCTP source port
});
