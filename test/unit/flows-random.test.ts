// The compiled matcher against a naive reference walk (written here from the documented
// semantics, sharing no code with the matcher beyond parseFlow): 300 random flows,
// 100,000 random packets, with the scan cache on, off and tiny (collisions).
import assert from "node:assert/strict";
import { test } from "node:test";
import { FlowError, FlowMatcher, type FlowSpec, parseFlow } from "../../src/flows/index.js";
import { HashMode, PacketInfo } from "../../src/packet/classify.js";
import { addressBytes } from "../helpers/craft.js";

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const rnd = prng(0xf10f);
const int = (n: number) => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
const chance = (p: number) => rnd() < p;

// A small universe, so that random flows and packets meet often.
const V4_BASES = ["10.0.0.0", "10.0.1.0", "10.1.0.0", "192.168.0.0", "0.0.0.0", "255.255.255.0"];
const V6_BASES = [
  "fd00::",
  "fd00::1:0",
  "fd00:1::",
  "2001:db8::",
  "::",
  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00",
];
const BYTE_ALPHABET = [0x00, 0x01, 0x80, 0xff];

function randomAddress(family: 4 | 6): Uint8Array {
  const b = addressBytes(pick(family === 4 ? V4_BASES : V6_BASES));
  // Vary the last byte, sometimes the one before.
  b[b.length - 1] = chance(0.5) ? int(8) : int(256);
  if (chance(0.2)) b[b.length - 2] ^= 1;
  return b;
}

function addressText(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join(".");
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(((b[i] << 8) | b[i + 1]).toString(16));
  return parts.join(":");
}

function randomCidr(): string {
  const family = chance(0.5) ? 4 : 6;
  const bits = family === 4 ? 32 : 128;
  const r = rnd();
  const len = r < 0.05 ? int(bits + 1) : r < 0.3 ? bits - 4 - int(6) : bits - int(4);
  return `${addressText(randomAddress(family))}/${len}`;
}

function randomPorts(): string {
  const n = 1 + int(3);
  const items: string[] = [];
  for (let i = 0; i < n; i++) {
    const lo = chance(0.05) ? 65535 - int(3) : int(40);
    items.push(chance(0.5) ? String(lo) : `${lo}-${Math.min(65535, lo + int(15))}`);
  }
  return items.join(",");
}

const PROTOS = ["tcp", "udp", "sctp"] as const;

function randomTerm(proto: string): string {
  const size = pick([1, 2, 4]);
  const offset = chance(0.1) ? 56 + int(4) : int(12);
  let value = 0;
  let mask = 0;
  for (let i = 0; i < size; i++) {
    value = value * 256 + pick(BYTE_ALPHABET);
    mask = mask * 256 + pick([0xff, 0xff, 0x0f, 0x81, 0x00]);
  }
  if (mask === 0) mask = 1;
  const v = value - (value % 1) === value ? andUnsigned(value, mask) : 0;
  return chance(0.5) && mask === 2 ** (8 * size) - 1
    ? `${proto}[${offset}:${size}] = ${v}`
    : `${proto}[${offset}:${size}] & 0x${mask.toString(16)} = 0x${v.toString(16)}`;
}

function andUnsigned(a: number, b: number): number {
  return (a & b) >>> 0;
}

function randomFlow(i: number): FlowSpec {
  for (;;) {
    const protocols = chance(0.15) ? [] : PROTOS.filter(() => chance(0.5));
    const input: Parameters<typeof parseFlow>[0] = {
      name: `f${i}`,
      target: "lb",
      priority: int(61) - 30, // about 5 flows per priority: ties are common
      protocols: protocols.join(","),
    };
    if (chance(0.6)) input.srcs = Array.from({ length: 1 + int(3) }, randomCidr).join(",");
    // No catch-all flows: they would answer for most packets.
    if (chance(0.9) || input.srcs === undefined) {
      input.dsts = Array.from({ length: 1 + int(3) }, randomCidr).join(",");
    }
    if (protocols.length > 0) {
      if (chance(0.5)) input.dports = randomPorts();
      if (chance(0.3)) input.sports = randomPorts();
      if (chance(0.3)) {
        input.match = Array.from({ length: 1 + int(2) }, () => randomTerm(pick(protocols))).join(
          ",",
        );
      }
    }
    try {
      return parseFlow(input);
    } catch (e) {
      if (!(e instanceof FlowError)) throw e;
      // Contradicting terms, families that never meet...: draw again.
    }
  }
}

// ---- the reference: a walk over the flows, straight from the documented semantics ----

interface RefCidr {
  bytes: Uint8Array;
  len: number;
}
interface RefFlow {
  name: string;
  priority: number;
  protocols: number[];
  dsts: RefCidr[];
  srcs: RefCidr[];
  dports: [number, number][];
  sports: [number, number][];
  terms: { proto: number; offset: number; size: number; mask: number; value: number }[];
}

const PROTO_NUM: Record<string, number> = { tcp: 6, udp: 17, sctp: 132 };

function refFlow(s: FlowSpec): RefFlow {
  const cidr = (t: string): RefCidr => {
    const [a, l] = t.split("/");
    return { bytes: addressBytes(a), len: Number(l) };
  };
  const range = (t: string): [number, number] => {
    const [a, b] = t.split("-");
    return [Number(a), Number(b ?? a)];
  };
  const terms =
    s.match === ""
      ? []
      : s.match.split(", ").map((t) => {
          const m = /^(\w+)\[(\d+):(\d)\](?: & 0x([0-9a-f]+))? = (?:0x([0-9a-f]+)|(\d+))$/.exec(t);
          assert.ok(m, `reference cannot read ${t}`);
          const size = Number(m[3]);
          return {
            proto: PROTO_NUM[m[1]],
            offset: Number(m[2]),
            size,
            mask: m[4] ? Number.parseInt(m[4], 16) : 2 ** (8 * size) - 1,
            value: m[5] ? Number.parseInt(m[5], 16) : Number(m[6]),
          };
        });
  return {
    name: s.name,
    priority: s.priority,
    protocols: s.protocols.map((p) => PROTO_NUM[p]),
    dsts: s.dsts.map(cidr),
    srcs: s.srcs.map(cidr),
    dports: s.dports.map(range),
    sports: s.sports.map(range),
    terms,
  };
}

function inCidr(family: number, addr: Uint8Array, c: RefCidr): boolean {
  if (c.bytes.length !== (family === 4 ? 4 : 16)) return false;
  for (let bit = 0; bit < c.len; bit++) {
    const byte = bit >> 3;
    const m = 0x80 >> (bit & 7);
    if ((addr[byte] & m) !== (c.bytes[byte] & m)) return false;
  }
  return true;
}

function refMatch(
  flows: RefFlow[],
  info: PacketInfo,
  buf: Uint8Array,
  promisc: boolean,
): string | null {
  if (info.invalid !== 0 || (info.family !== 4 && info.family !== 6)) return null;
  const p = info.proto;
  const ported = p === 6 || p === 17 || p === 132;
  const echo =
    promisc &&
    !info.icmpError &&
    ((p === 1 && (info.icmpType === 8 || info.icmpType === 0)) ||
      (p === 58 && (info.icmpType === 128 || info.icmpType === 129)));
  const portsKnown = info.hashMode !== HashMode.Addresses;
  for (const f of flows) {
    if (f.dsts.length > 0 && !f.dsts.some((c) => inCidr(info.family, info.dst, c))) continue;
    if (f.srcs.length > 0 && !f.srcs.some((c) => inCidr(info.family, info.src, c))) continue;
    if (echo) return f.name;
    if (!ported) {
      if (f.protocols.length === 0) return f.name;
      continue;
    }
    if (f.protocols.length > 0 && !f.protocols.includes(p)) continue;
    const inRanges = (rs: [number, number][], port: number) =>
      rs.length === 0 || (portsKnown && rs.some(([lo, hi]) => port >= lo && port <= hi));
    if (!inRanges(f.dports, info.dport) || !inRanges(f.sports, info.sport)) continue;
    let bytesOk = true;
    for (const t of f.terms) {
      if (t.proto !== p) continue;
      const avail = Math.min(info.l4Length, buf.length - info.l4Offset);
      if (info.l4Offset < 0 || t.offset + t.size > avail) {
        bytesOk = false;
        break;
      }
      let v = 0;
      for (let i = 0; i < t.size; i++) v = v * 256 + buf[info.l4Offset + t.offset + i];
      if ((v & t.mask) >>> 0 !== t.value) {
        bytesOk = false;
        break;
      }
    }
    if (bytesOk) return f.name;
  }
  return null;
}

// ---- random packets: PacketInfo filled directly, bytes from a small alphabet ----

function randomPacket(info: PacketInfo, buf: Uint8Array): void {
  info.invalid = chance(0.01) ? 1 : 0;
  const family = chance(0.5) ? 4 : 6;
  info.family = family;
  info.src.fill(0);
  info.dst.fill(0);
  info.src.set(randomAddress(family));
  info.dst.set(randomAddress(family));
  info.proto = pick([6, 6, 17, 17, 132, 1, 58, 47]);
  info.icmpError = chance(0.1);
  info.icmpType =
    info.proto === 1 ? pick([8, 0, 3, 13]) : info.proto === 58 ? pick([128, 129, 1, 135]) : -1;
  const ported = info.proto === 6 || info.proto === 17 || info.proto === 132;
  info.hashMode = ported && chance(0.9) ? HashMode.FiveTuple : HashMode.Addresses;
  // Without ports (HashMode.Addresses) the port fields are garbage the matcher must ignore.
  info.sport = chance(0.05) ? 65535 - int(3) : int(60);
  info.dport = chance(0.05) ? 65535 - int(3) : int(60);
  for (let i = 0; i < buf.length; i++) buf[i] = pick(BYTE_ALPHABET);
  if (ported && info.hashMode !== HashMode.Addresses && chance(0.9)) {
    info.l4Offset = int(24);
    info.l4Length = chance(0.7) ? buf.length - info.l4Offset : int(buf.length - info.l4Offset + 1);
  } else {
    info.l4Offset = -1;
    info.l4Length = 0;
  }
}

test("compiled matcher == reference walk: 300 random flows, 100,000 random packets", () => {
  const specs = Array.from({ length: 300 }, (_, i) => randomFlow(i));
  const ref = specs
    .map(refFlow)
    .sort((a, b) => b.priority - a.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const variants = [
    {
      what: "default",
      m: new FlowMatcher(specs),
      mp: new FlowMatcher(specs, { promiscuousPing: true }),
    },
    { what: "no cache", m: new FlowMatcher(specs, { cacheEntries: 0 }), mp: null },
    { what: "tiny cache", m: new FlowMatcher(specs, { cacheEntries: 4 }), mp: null },
  ];
  assert.deepEqual(
    variants[0].m.flows.map((f) => f.name),
    ref.map((f) => f.name),
    "the matcher's order is priority descending, then name",
  );
  const info = new PacketInfo();
  const buf = new Uint8Array(64);
  let matched = 0;
  let withBytes = 0;
  const answers = new Set<string>();
  const hasTerms = new Set(specs.filter((s) => s.match !== "").map((s) => s.name));
  for (let n = 0; n < 100_000; n++) {
    randomPacket(info, buf);
    const want = refMatch(ref, info, buf, false);
    const wantP = refMatch(ref, info, buf, true);
    if (want !== null) matched++;
    if (want !== null) answers.add(want);
    if (want !== null && hasTerms.has(want)) withBytes++;
    for (const v of variants) {
      const i = v.m.match(info, buf);
      const got = i < 0 ? null : v.m.flows[i].name;
      if (got !== want) {
        assert.fail(
          `${v.what}: packet ${n} matched ${got}, the reference ${want}: ${JSON.stringify(info)}`,
        );
      }
      if (v.mp) {
        const j = v.mp.match(info, buf);
        const gotP = j < 0 ? null : v.mp.flows[j].name;
        if (gotP !== wantP)
          assert.fail(`promiscuous ping: packet ${n} matched ${gotP}, the reference ${wantP}`);
      }
    }
  }
  // The test is only worth something if the answers vary.
  assert.ok(matched > 20_000 && matched < 95_000, `matched ${matched}`);
  assert.ok(answers.size > 100, `${answers.size} different flows matched`);
  assert.ok(withBytes > 500, `matched a byte-match flow ${withBytes} times`);
});

test("compiled matcher == reference walk with 2,000 flows (word scans, every set large)", () => {
  // Few selective dimensions: many flows accept most packets, so scans dominate.
  const specs: FlowSpec[] = [];
  for (let i = 0; i < 2000; i++) {
    const protocols = chance(0.3) ? "" : "tcp,udp";
    specs.push(
      parseFlow({
        name: `g${i}`,
        target: "lb",
        priority: int(3),
        protocols,
        ...(protocols && chance(0.5) ? { dports: `${int(30)}-${30 + int(30)}` } : {}),
        ...(chance(0.5)
          ? { srcs: `${pick(["10.0.0.0/8", "192.168.0.0/16", "fd00::/8", "2001:db8::/32"])}` }
          : {}),
        ...(protocols && chance(0.2)
          ? { match: pick(["tcp[0:1] = 0x80", "udp[1:1] & 0x0f = 0x01", "tcp[3:1] & 0x80 = 0"]) }
          : {}),
      }),
    );
  }
  const ref = specs
    .map(refFlow)
    .sort((a, b) => b.priority - a.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const m = new FlowMatcher(specs);
  const m0 = new FlowMatcher(specs, { cacheEntries: 0 });
  const info = new PacketInfo();
  const buf = new Uint8Array(64);
  for (let n = 0; n < 20_000; n++) {
    randomPacket(info, buf);
    const want = refMatch(ref, info, buf, false);
    for (const x of [m, m0]) {
      const i = x.match(info, buf);
      assert.equal(i < 0 ? null : x.flows[i].name, want, `packet ${n}`);
    }
  }
});
