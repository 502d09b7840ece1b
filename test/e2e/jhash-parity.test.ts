// Kernel parity of the flow hash: the kernel computes `jhash <key> mod M seed S` with an nft
// rule on output and stores it as the conntrack mark; we compute reciprocalScale(flowHash())
// for the same flows, both from the textual tuple (infoFromTuple) and from the bytes of the
// very packets the kernel hashed (captured with tcpdump, run through classify()).
// Needs root; skipped only outside CI when not root.
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import ipaddr from "ipaddr.js";
import { reciprocalScale } from "../../src/hash/jhash.js";
import {
  classify,
  defaultClassifyOptions,
  flowHash,
  HashMode,
  infoFromTuple,
  layoutKey,
  PacketInfo,
} from "../../src/packet/classify.js";
import { isRoot, link, type Netns, Topology } from "../helpers/netns.js";
import { readPcap } from "../helpers/pcap.js";

const skip = !isRoot() && process.env.CI !== "true";

interface Flow {
  proto: "tcp" | "udp";
  family: 4 | 6;
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

interface Round {
  mode: HashMode;
  seed: number;
  modulus: number;
}

// At least two seeds and two moduli per mode, incl. the large prime 65537 and a seed >= 2^31.
const ROUNDS: Round[] = [
  { mode: HashMode.FiveTuple, seed: 0x1234, modulus: 65537 },
  { mode: HashMode.FiveTuple, seed: 0xdeadbeef, modulus: 1000003 },
  { mode: HashMode.FiveTuple, seed: 0, modulus: 997 },
  { mode: HashMode.Addresses, seed: 0x1234, modulus: 65537 },
  { mode: HashMode.Addresses, seed: 0xcafef00d, modulus: 4099 },
  { mode: HashMode.Ports, seed: 0x1234, modulus: 65537 },
  { mode: HashMode.Ports, seed: 0x9e3779b9, modulus: 251 },
];
const FLOWS_PER_FAMILY = 40; // per round; half TCP, half UDP
const SOURCES = 10; // source addresses per family on the client

// Sends one UDP datagram / one TCP SYN per flow from its bound source address and port.
// The server drops SYNs (an RST would make conntrack forget the entry at once), so each
// connect is abandoned after a short wait; the entry stays in SYN_SENT for two minutes.
const SENDER = `
const dgram = require("node:dgram");
const net = require("node:net");
function udp(f) {
  return new Promise((resolve) => {
    const s = dgram.createSocket(f.family === 4 ? "udp4" : "udp6");
    const done = () => { try { s.close(); } catch {} resolve(); };
    s.on("error", (e) => { console.error(String(e)); done(); });
    s.bind({ address: f.src, port: f.sport }, () => s.send("x", f.dport, f.dst, done));
  });
}
function tcp(f) {
  return new Promise((resolve) => {
    const c = net.connect({ host: f.dst, port: f.dport, localAddress: f.src, localPort: f.sport });
    const done = () => { c.destroy(); resolve(); };
    c.on("connect", done);
    c.on("error", done);
    setTimeout(done, 400);
  });
}
let input = "";
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", async () => {
  const flows = JSON.parse(input);
  await Promise.all(flows.map((f) => (f.proto === "udp" ? udp(f) : tcp(f))));
  process.exit(0);
});
`;

function rule(mode: HashMode, family: 4 | 6, seed: number, modulus: number): string {
  const ip = family === 4 ? "ip" : "ip6";
  const fields =
    mode === HashMode.FiveTuple
      ? `${ip} saddr . ${ip} daddr . th sport . th dport`
      : mode === HashMode.Addresses
        ? `${ip} saddr . ${ip} daddr`
        : "th sport . th dport";
  const nfproto = family === 4 ? "ipv4" : "ipv6";
  return `meta nfproto ${nfproto} meta l4proto { tcp, udp } ct mark set jhash ${fields} mod ${modulus} seed 0x${seed.toString(16)}`;
}

/** Deterministic PRNG (mulberry32) so a failure can be reproduced. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function normalize(addr: string): string {
  return ipaddr.parse(addr).toNormalizedString();
}

function tupleKey(proto: string, src: string, dst: string, sport: number, dport: number): string {
  return `${proto} ${normalize(src)} ${normalize(dst)} ${sport} ${dport}`;
}

function makeFlows(round: number): Flow[] {
  const rnd = prng(0x5eed + round);
  const flows: Flow[] = [];
  for (const family of [4, 6] as const) {
    for (let i = 0; i < FLOWS_PER_FAMILY; i++) {
      const n = 1 + (rnd() % SOURCES);
      const src = family === 4 ? `10.77.0.${n}` : `fd77::${n.toString(16)}`;
      const r = rnd();
      const dst =
        family === 4
          ? `10.78.${(r >>> 8) & 0xff}.${1 + (r % 254)}`
          : `fd78::${(r >>> 16).toString(16)}:${(r & 0xffff).toString(16)}:${(rnd() & 0xffff).toString(16)}`;
      flows.push({
        proto: i % 2 === 0 ? "udp" : "tcp",
        family,
        src,
        // Unique per round and flow, so no socket ever collides with a previous round.
        sport: 20000 + round * 2 * FLOWS_PER_FAMILY + (family === 6 ? FLOWS_PER_FAMILY : 0) + i,
        dst,
        dport: 1 + (rnd() % 65535),
      });
    }
  }
  return flows;
}

/** conntrack -L in the namespace -> mark by original-direction tuple. */
function conntrackMarks(ns: Netns): Map<string, number> {
  const marks = new Map<string, number>();
  for (const family of ["ipv4", "ipv6"]) {
    const out = ns.exec("conntrack", ["-L", "-f", family, "-o", "extended"]);
    for (const line of out.split("\n")) {
      if (!line.startsWith(family)) continue;
      const proto = /\b(tcp|udp)\b/.exec(line)?.[1];
      const src = /\bsrc=(\S+)/.exec(line)?.[1];
      const dst = /\bdst=(\S+)/.exec(line)?.[1];
      const sport = /\bsport=(\d+)/.exec(line)?.[1];
      const dport = /\bdport=(\d+)/.exec(line)?.[1];
      const mark = /\bmark=(\d+)/.exec(line)?.[1];
      if (!proto || !src || !dst || !sport || !dport || mark === undefined) continue;
      marks.set(tupleKey(proto, src, dst, Number(sport), Number(dport)), Number(mark));
    }
  }
  return marks;
}

let topo: Topology;
let client: Netns;
let server: Netns;
let workdir: string;

before(() => {
  if (skip) return;
  workdir = mkdtempSync(join(tmpdir(), "nflb-parity-"));
  topo = new Topology();
  client = topo.add("pc");
  server = topo.add("ps");
  const v4 = Array.from({ length: SOURCES }, (_, i) => `10.77.0.${i + 1}/24`);
  const v6 = Array.from({ length: SOURCES }, (_, i) => `fd77::${(i + 1).toString(16)}/64`);
  link(client, "veth0", [...v4, ...v6], server, "veth0", ["10.77.0.254/24", "fd77::fe/64"]);
  // The server owns every destination (AnyIP) and drops the SYNs (see SENDER).
  server.exec("ip", ["route", "add", "local", "10.78.0.0/16", "dev", "lo"]);
  server.exec("ip", ["-6", "route", "add", "local", "fd78::/64", "dev", "lo"]);
  client.exec("ip", ["route", "add", "10.78.0.0/16", "via", "10.77.0.254"]);
  client.exec("ip", ["-6", "route", "add", "fd78::/64", "via", "fd77::fe"]);
  // Static neighbours: a fresh link can take a second to answer the first solicitation.
  const mac = (
    JSON.parse(server.exec("ip", ["-j", "link", "show", "veth0"])) as { address: string }[]
  )[0].address;
  for (const gw of ["10.77.0.254", "fd77::fe"]) {
    client.exec("ip", ["neigh", "replace", gw, "lladdr", mac, "dev", "veth0", "nud", "permanent"]);
  }
  server.exec(
    "nft",
    ["-f", "-"],
    "table inet nosyn {\n chain input {\n type filter hook input priority 0;\n meta l4proto tcp drop\n }\n}\n",
  );
});

// KEEP=1 leaves the captures in the temporary directory for a look with tcpdump -r.
after(() => {
  topo?.destroy();
  if (workdir && !process.env.KEEP) rmSync(workdir, { recursive: true, force: true });
});

async function capture(ns: Netns, file: string, run: () => void): Promise<void> {
  const filter = "(tcp or udp) and (src net 10.77.0.0/24 or src net fd77::/64)";
  const proc = ns.spawn(
    "tcpdump",
    ["-i", "veth0", "-n", "-U", "--immediate-mode", "-s", "256", "-c", "1000", "-w", file, filter],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${stderr}`)), 10_000);
    proc.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes("listening on")) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on("exit", () => {
      clearTimeout(timer);
      reject(new Error(`tcpdump exited: ${stderr}`));
    });
  });
  try {
    run();
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    proc.kill("SIGTERM");
  }
  if (proc.exitCode === null) await once(proc, "exit");
}

test("nft jhash marks equal reciprocalScale(flowHash) for v4/v6 TCP/UDP", {
  skip: skip ? "needs root (runs in CI regardless)" : false,
  timeout: 180_000,
}, async (t) => {
  const info = new PacketInfo();
  const opts = defaultClassifyOptions;
  let compared = 0;
  let comparedBytes = 0;
  for (let r = 0; r < ROUNDS.length; r++) {
    const { mode, seed, modulus } = ROUNDS[r];
    client.exec("nft", ["flush", "ruleset"]);
    client.exec(
      "nft",
      ["-f", "-"],
      `table inet parity {
        chain out {
          type filter hook output priority 0; policy accept;
          ${rule(mode, 4, seed, modulus)}
          ${rule(mode, 6, seed, modulus)}
        }
      }\n`,
    );
    client.tryExec("conntrack", ["-F"]);
    const flows = makeFlows(r);
    const pcapFile = join(workdir, `round${r}.pcap`);
    await capture(server, pcapFile, () => {
      client.exec("node", ["-e", SENDER], JSON.stringify(flows));
    });
    const marks = conntrackMarks(client);
    const byTuple = new Map<string, Flow>();
    for (const f of flows) {
      const key = tupleKey(f.proto, f.src, f.dst, f.sport, f.dport);
      byTuple.set(key, f);
      const mark = marks.get(key);
      assert.notEqual(mark, undefined, `round ${r}: no conntrack entry for ${key}`);
      infoFromTuple(f.proto, f.src, f.sport, f.dst, f.dport, opts, info);
      info.hashMode = mode;
      layoutKey(info);
      const ours = reciprocalScale(flowHash(info, seed), modulus);
      assert.equal(ours, mark, `round ${r} mode ${mode} seed ${seed} mod ${modulus}: ${key}`);
      compared++;
    }
    // The same, from the bytes of the packets the kernel hashed.
    const seen = new Set<string>();
    for (const pkt of readPcap(readFileSync(pcapFile))) {
      if (pkt.ip === null) continue;
      assert.equal(classify(pkt.ip, 0, pkt.ip.length, opts, info), 0);
      const proto = info.proto === 6 ? "tcp" : "udp";
      const src = ipaddr.fromByteArray(
        Array.from(info.src.subarray(0, info.family === 4 ? 4 : 16)),
      );
      const dst = ipaddr.fromByteArray(
        Array.from(info.dst.subarray(0, info.family === 4 ? 4 : 16)),
      );
      const key = tupleKey(proto, src.toString(), dst.toString(), info.sport, info.dport);
      if (!byTuple.has(key) || seen.has(key)) continue; // e.g. a SYN retransmission
      seen.add(key);
      info.hashMode = mode;
      layoutKey(info);
      assert.equal(reciprocalScale(flowHash(info, seed), modulus), marks.get(key), `bytes ${key}`);
      comparedBytes++;
    }
    assert.equal(seen.size, flows.length, `round ${r}: captured ${seen.size} of ${flows.length}`);
  }
  const expected = ROUNDS.length * 2 * FLOWS_PER_FAMILY;
  assert.equal(compared, expected);
  assert.equal(comparedBytes, expected);
  t.diagnostic(`jhash parity: ${compared} tuples and ${comparedBytes} captured packets matched`);
});
