// Why nflb keys an ICMP error on the packet it quotes, shown on bytes: for many flows,
// the forward packet (client -> VIP, TCP) and the error a router sends about the reply
// (router -> VIP, quoting VIP -> client) are classified, hashed and looked up in a Maglev
// table of three targets. Keyed on the quote, every error reaches the flow's target;
// keyed on its outer header (router . VIP, what a plain `jhash ip saddr . ip daddr`
// sees), about 2/3 of them reach a target that has no such connection, and path MTU
// discovery (and every other error a connection should learn of) breaks.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { buildMaglevTable, maglevLookup } from "../../src/maglev/maglev.js";
import {
  classify,
  defaultClassifyOptions,
  flowHash,
  HashMode,
  infoFromTuple,
  PacketInfo,
} from "../../src/packet/index.js";

const OPTS = defaultClassifyOptions;
const SEED = 0x1234;
const M = 65537;
const TABLE = buildMaglevTable(
  [1, 2, 3].map((fwmark) => ({ fwmark, weight: 1 })),
  M,
);
const FLOWS = 3000;
const VIP4 = "10.200.0.1";
const VIP6 = "fd00:200::1";
const VIP_PORT = 443;

// ---- a deterministic PRNG (mulberry32), so the flow set is the same every run ----

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

// ---- packet builders (checksums left zero: the classifier never reads them) ----

const be16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];

function bytesOf(family: 4 | 6, addr: string): number[] {
  const i = new PacketInfo();
  infoFromTuple(0, addr, 0, addr, 0, OPTS, i);
  return Array.from(i.src.subarray(0, family === 4 ? 4 : 16));
}

/** A TCP header with the given ports (ACK, 20 bytes). */
function tcp(sport: number, dport: number): number[] {
  return [
    ...be16(sport),
    ...be16(dport),
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    1,
    0x50,
    0x10,
    0xff,
    0xff,
    0,
    0,
    0,
    0,
  ];
}

/** IPv4 header + payload; DF set, as TCP sends it with PMTU discovery on. */
function ipv4(
  src: string,
  dst: string,
  proto: number,
  payload: number[],
  total?: number,
): number[] {
  const len = total ?? 20 + payload.length;
  return [
    0x45,
    0,
    ...be16(len),
    0x12,
    0x34,
    0x40,
    0,
    64,
    proto,
    0,
    0,
    ...bytesOf(4, src),
    ...bytesOf(4, dst),
    ...payload,
  ];
}

function ipv6(src: string, dst: string, next: number, payload: number[], plen?: number): number[] {
  return [
    0x60,
    0,
    0,
    0,
    ...be16(plen ?? payload.length),
    next,
    64,
    ...bytesOf(6, src),
    ...bytesOf(6, dst),
    ...payload,
  ];
}

/**
 * The error a router sends about the reply VIP:VIP_PORT -> client:port that it could
 * not forward: to the VIP, quoting the reply's IP header and the start of its TCP header
 * (the quoted length fields still say 1500: the quote is cut short, as on the wire).
 */
function icmpError4(
  type: number,
  code: number,
  router: string,
  client: string,
  port: number,
  mtu: number,
) {
  const quote = ipv4(VIP4, client, 6, tcp(VIP_PORT, port).slice(0, 8), 1500);
  return ipv4(router, VIP4, 1, [type, code, 0, 0, 0, 0, ...be16(mtu), ...quote]);
}

function icmpError6(
  type: number,
  code: number,
  router: string,
  client: string,
  port: number,
  mtu: number,
) {
  const quote = ipv6(VIP6, client, 6, tcp(VIP_PORT, port), 1460);
  const mtuField = [(mtu >>> 24) & 0xff, (mtu >>> 16) & 0xff, ...be16(mtu & 0xffff)];
  return ipv6(router, VIP6, 58, [type, code, 0, 0, ...mtuField, ...quote]);
}

// ---- the comparison ----

interface Flow {
  client: string;
  port: number;
  /** The router nearest this client, which sends the errors about its replies. */
  router: string;
}

function flows(family: 4 | 6, seed: number): Flow[] {
  const rnd = prng(seed);
  const byte = () => Math.floor(rnd() * 256);
  const hex = () => Math.floor(rnd() * 65536).toString(16);
  const out: Flow[] = [];
  for (let i = 0; i < FLOWS; i++) {
    // Clients behind 64 different routers.
    const r = Math.floor(rnd() * 64);
    if (family === 4) {
      out.push({
        client: `100.${64 + r}.${byte()}.${1 + Math.floor(rnd() * 254)}`,
        port: 1024 + Math.floor(rnd() * 64512),
        router: `100.${64 + r}.0.1`,
      });
    } else {
      out.push({
        client: `2001:db8:${r.toString(16)}::${hex()}:${hex()}`,
        port: 1024 + Math.floor(rnd() * 64512),
        router: `2001:db8:${r.toString(16)}::1`,
      });
    }
  }
  return out;
}

const info = new PacketInfo();

function targetOf(pkt: number[]): number {
  const bytes = Uint8Array.from(pkt);
  assert.equal(classify(bytes, 0, bytes.length, OPTS, info), 0, "packet must classify");
  return maglevLookup(TABLE, flowHash(info, SEED));
}

/** What an error-blind balancer does: hash the outer addresses (router . VIP). */
function outerTargetOf(router: string, vip: string): number {
  infoFromTuple("icmp", router, 0, vip, 0, OPTS, info);
  assert.equal(info.hashMode, HashMode.Addresses);
  return maglevLookup(TABLE, flowHash(info, SEED));
}

const cases = [
  {
    family: 4 as const,
    vip: VIP4,
    errors: [
      { what: "fragmentation needed", type: 3, code: 4 },
      { what: "host unreachable", type: 3, code: 1 },
      { what: "time exceeded", type: 11, code: 0 },
    ],
    forward: (f: Flow) => ipv4(f.client, VIP4, 6, tcp(f.port, VIP_PORT)),
    error: (type: number, code: number, f: Flow) =>
      icmpError4(type, code, f.router, f.client, f.port, 1000),
  },
  {
    family: 6 as const,
    vip: VIP6,
    errors: [
      { what: "packet too big", type: 2, code: 0 },
      { what: "address unreachable", type: 1, code: 3 },
      { what: "time exceeded", type: 3, code: 0 },
    ],
    forward: (f: Flow) => ipv6(f.client, VIP6, 6, tcp(f.port, VIP_PORT)),
    error: (type: number, code: number, f: Flow) =>
      icmpError6(type, code, f.router, f.client, f.port, 1280),
  },
];

for (const c of cases) {
  describe(`IPv${c.family}: ICMP errors and the flow they belong to (${FLOWS} flows, 3 targets)`, () => {
    const set = flows(c.family, 0xc0ffee + c.family);
    const forward = set.map((f) => targetOf(c.forward(f)));

    test("the forward packets spread over all three targets", () => {
      const counts = [1, 2, 3].map((m) => forward.filter((x) => x === m).length);
      for (const n of counts) assert.ok(n > FLOWS * 0.28 && n < FLOWS * 0.39, String(counts));
    });

    for (const e of c.errors) {
      test(`${e.what} (type ${e.type} code ${e.code}), keyed on its quote: always the flow's target`, () => {
        for (const [i, f] of set.entries()) {
          const got = targetOf(c.error(e.type, e.code, f));
          assert.ok(info.icmpError);
          if (got !== forward[i]) {
            assert.fail(`${f.client}:${f.port} -> target ${forward[i]}, its error -> ${got}`);
          }
        }
      });
    }

    test("keyed on its outer header (router . VIP): about 2/3 of the errors miss", (t) => {
      const e = c.errors[0];
      let missed = 0;
      for (const [i, f] of set.entries()) {
        const outer = outerTargetOf(f.router, c.vip);
        // Cross-check: that key is what the error packet's outer header holds.
        const pkt = Uint8Array.from(c.error(e.type, e.code, f));
        const o = c.family === 4 ? 12 : 8;
        const alen = c.family === 4 ? 4 : 16;
        assert.deepEqual(Array.from(pkt.subarray(o, o + 2 * alen)), [
          ...bytesOf(c.family, f.router),
          ...bytesOf(c.family, c.vip),
        ]);
        if (outer !== forward[i]) missed++;
      }
      const share = missed / FLOWS;
      t.diagnostic(`outer-header hashing: ${missed} of ${FLOWS} errors miss (${share.toFixed(3)})`);
      // Independent hashes over 3 equal targets: 2/3 miss; with 3000 flows the share is
      // within a few tenths of a percent of that (the flow set is fixed, so no flakiness).
      assert.ok(share > 0.6 && share < 0.73, `missed ${missed} of ${FLOWS} (${share.toFixed(3)})`);
    });

    test("one router's errors all land on one target, whatever the flow", () => {
      // The extreme the e2e test shows: one narrow link, one router, every error to the
      // same target, so only the connections that target owns recover.
      const e = c.errors[0];
      const router = set[0].router;
      const outer = outerTargetOf(router, c.vip);
      const mine = set.flatMap((f, i) => (f.router === router ? [i] : []));
      assert.ok(mine.length > 20, `${mine.length} flows behind ${router}`);
      const owned = mine.filter((i) => forward[i] === outer).length;
      assert.ok(owned > 0 && owned < mine.length, `outer target owns ${owned} of ${mine.length}`);
      // Keyed on the quote, the same errors go to their flows' targets, all three of them.
      const quoted = new Set(mine.map((i) => targetOf(c.error(e.type, e.code, set[i]))));
      assert.deepEqual([...quoted].sort(), [1, 2, 3]);
    });
  });
}
