// Classification of real packets captured by scripts/capture-fixtures.sh (see
// test/fixtures/README.md). Values that change with every capture (fragment ids, MLD
// link-local source) are checked against the header bytes, not hard-coded.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type ClassifyOptions,
  classify,
  defaultClassifyOptions,
  FragKind,
  flowHash,
  formatAddress,
  HashMode,
  infoFromTuple,
  PacketInfo,
} from "../../src/packet/classify.js";
import { readPcap } from "../helpers/pcap.js";

// dist/test/unit -> repo root (fixtures are not copied by tsc).
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const FIXTURES = join(ROOT, "test", "fixtures");
const OPTS: ClassifyOptions = defaultClassifyOptions;

function packets(name: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const p of readPcap(readFileSync(join(FIXTURES, name)))) if (p.ip) out.push(p.ip);
  return out;
}

function cls(pkt: Uint8Array, opts: ClassifyOptions = OPTS): PacketInfo {
  const info = new PacketInfo();
  const r = classify(pkt, 0, pkt.length, opts, info);
  assert.equal(r, 0, `invalid ${r}`);
  return info;
}

interface Tuple {
  proto: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

function tupleOf(i: PacketInfo): Tuple {
  return {
    proto: i.proto,
    src: formatAddress(i.family, i.src),
    sport: i.sport,
    dst: formatAddress(i.family, i.dst),
    dport: i.dport,
  };
}

function reverse(t: Tuple): Tuple {
  return { proto: t.proto, src: t.dst, sport: t.dport, dst: t.src, dport: t.sport };
}

function keyOf(i: PacketInfo): number[] {
  return Array.from(i.key.subarray(0, i.keyWords));
}

/** The key a textual tuple gives: what an ICMP error must reproduce. */
function keyFromTuple(t: Tuple): number[] {
  const i = new PacketInfo();
  infoFromTuple(t.proto, t.src, t.sport, t.dst, t.dport, OPTS, i);
  return keyOf(i);
}

function assertSameFlow(a: PacketInfo, b: PacketInfo, what: string): void {
  assert.deepEqual(keyOf(a), keyOf(b), what);
  for (const seed of [0, 0x1234, 0xdeadbeef]) {
    assert.equal(flowHash(a, seed), flowHash(b, seed), `${what} seed ${seed}`);
  }
}

const U16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const U32 = (b: Uint8Array, o: number) =>
  ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

function checkConnection(file: string, forward: Tuple, count: number): void {
  const pkts = packets(file);
  assert.equal(pkts.length, count);
  const back = reverse(forward);
  let fwd = 0;
  for (const [n, p] of pkts.entries()) {
    const i = cls(p);
    assert.equal(i.hashMode, HashMode.FiveTuple);
    assert.equal(i.fragKind, FragKind.None);
    assert.equal(i.icmpError, false);
    const t = tupleOf(i);
    if (n === 0) assert.deepEqual(t, forward, "first packet is the client's");
    assert.ok(
      JSON.stringify(t) === JSON.stringify(forward) || JSON.stringify(t) === JSON.stringify(back),
      `${file}[${n}] ${JSON.stringify(t)}`,
    );
    if (JSON.stringify(t) === JSON.stringify(forward)) fwd++;
    assert.equal(i.keyWords, i.family === 4 ? 4 : 10);
  }
  assert.ok(fwd > 0 && fwd < pkts.length, "both directions present");
}

describe("TCP and UDP connections", () => {
  test("tcp-v4: handshake, data, teardown", () => {
    const fwd = { proto: 6, src: "10.1.0.1", sport: 40104, dst: "10.2.0.1", dport: 8080 };
    checkConnection("tcp-v4.pcap", fwd, 8);
  });
  test("tcp-v6", () => {
    const fwd = { proto: 6, src: "fd01::1", sport: 40106, dst: "fd02::1", dport: 8080 };
    checkConnection("tcp-v6.pcap", fwd, 8);
  });
  test("udp-v4: datagrams and echoes", () => {
    const fwd = { proto: 17, src: "10.1.0.1", sport: 40002, dst: "10.2.0.1", dport: 5300 };
    checkConnection("udp-v4.pcap", fwd, 4);
  });
  test("udp-v6", () => {
    const fwd = { proto: 17, src: "fd01::1", sport: 40012, dst: "fd02::1", dport: 5300 };
    checkConnection("udp-v6.pcap", fwd, 4);
  });
  test("GSO super-packets (v4): total length beyond the captured 128 bytes", () => {
    const pkts = packets("tcp-gso-v4.pcap");
    assert.equal(pkts.length, 3);
    for (const p of pkts) {
      assert.ok(U16(p, 2) > p.length + 1000, "IP total length exceeds the bytes present");
      assert.deepEqual(tupleOf(cls(p)), {
        proto: 6,
        src: "10.1.0.1",
        sport: 40204,
        dst: "10.1.0.254",
        dport: 8081,
      });
    }
  });
  test("GSO super-packets (v6)", () => {
    const pkts = packets("tcp-gso-v6.pcap");
    assert.equal(pkts.length, 3);
    for (const p of pkts) {
      assert.ok(U16(p, 4) > p.length + 1000, "payload length exceeds the bytes present");
      assert.deepEqual(tupleOf(cls(p)), {
        proto: 6,
        src: "fd01::1",
        sport: 40206,
        dst: "fd01::fe",
        dport: 8081,
      });
    }
  });
});

describe("fragments", () => {
  test("frag-udp-v4: first fragment has ports, later ones addresses + id", () => {
    const pkts = packets("frag-udp-v4.pcap");
    assert.equal(pkts.length, 4);
    const id = U16(pkts[0], 4);
    const first = cls(pkts[0]);
    assert.equal(first.fragKind, FragKind.First);
    assert.equal(first.fragId, id);
    assert.equal(first.hashMode, HashMode.FiveTuple);
    assert.deepEqual(tupleOf(first), {
      proto: 17,
      src: "10.1.0.1",
      sport: 40004,
      dst: "10.2.0.1",
      dport: 5300,
    });
    for (const p of pkts.slice(1)) {
      const i = cls(p);
      assert.equal(i.fragKind, FragKind.Later);
      assert.equal(i.fragId, id);
      assert.equal(i.hashMode, HashMode.Addresses);
      assert.equal(i.keyWords, 2);
      assert.deepEqual(tupleOf(i), {
        proto: 17,
        src: "10.1.0.1",
        sport: 0,
        dst: "10.2.0.1",
        dport: 0,
      });
    }
  });
  test("frag-udp-v6: 32-bit id from the fragment header", () => {
    const pkts = packets("frag-udp-v6.pcap");
    assert.equal(pkts.length, 4);
    assert.equal(pkts[0][6], 44, "fragment header right after the fixed header");
    const id = U32(pkts[0], 44);
    const first = cls(pkts[0]);
    assert.equal(first.fragKind, FragKind.First);
    assert.equal(first.fragId, id);
    assert.deepEqual(tupleOf(first), {
      proto: 17,
      src: "fd01::1",
      sport: 40014,
      dst: "fd02::1",
      dport: 5300,
    });
    for (const p of pkts.slice(1)) {
      const i = cls(p);
      assert.equal(i.fragKind, FragKind.Later);
      assert.equal(i.fragId, id);
      assert.equal(i.hashMode, HashMode.Addresses);
      assert.equal(i.keyWords, 8);
      assert.equal(i.proto, 17);
      assert.equal(i.sport, 0);
    }
  });
});

describe("ICMP", () => {
  test("echo request/reply v4: addresses only", () => {
    const pkts = packets("icmp-echo-v4.pcap");
    assert.equal(pkts.length, 4);
    for (const [n, p] of pkts.entries()) {
      const i = cls(p);
      assert.equal(i.proto, 1);
      assert.equal(i.hashMode, HashMode.Addresses);
      assert.equal(i.icmpError, false);
      assert.equal(i.icmpType, n % 2 === 0 ? 8 : 0);
      assert.equal(i.keyWords, 2);
      assert.equal(formatAddress(4, i.src), n % 2 === 0 ? "10.1.0.1" : "10.2.0.1");
    }
  });
  test("echo request/reply v6", () => {
    const pkts = packets("icmp6-echo.pcap");
    assert.equal(pkts.length, 4);
    for (const [n, p] of pkts.entries()) {
      const i = cls(p);
      assert.equal(i.proto, 58);
      assert.equal(i.hashMode, HashMode.Addresses);
      assert.equal(i.icmpType, n % 2 === 0 ? 128 : 129);
      assert.equal(i.keyWords, 8);
    }
  });

  // [0] small datagram, [1] its echo (B -> A), [2] 1400-byte datagram, [3] the error from R.
  for (const [file, type, code] of [
    ["icmp-fragneeded-v4.pcap", 3, 4],
    ["icmp6-ptb.pcap", 2, 0],
  ] as const) {
    test(`${file}: error keyed like the flow towards its receiver`, () => {
      const pkts = packets(file);
      assert.equal(pkts.length, 4);
      const err = cls(pkts[3]);
      assert.equal(err.icmpError, true);
      assert.equal(err.icmpType, type);
      assert.equal(err.icmpCode, code);
      assert.equal(err.proto, 17);
      assert.equal(err.hashMode, HashMode.FiveTuple);
      // The outer source is the router; the key ignores it.
      const router = formatAddress(err.family, pkts[3].subarray(err.family === 4 ? 12 : 8));
      assert.match(router, /^(10\.1\.0\.254|fd01::fe)$/);
      const echo = cls(pkts[1]);
      assert.deepEqual(tupleOf(err), tupleOf(echo));
      assertSameFlow(err, echo, "error vs echo reply");
      assert.deepEqual(tupleOf(err), reverse(tupleOf(cls(pkts[2]))));
    });
  }

  // [0] datagram to a closed port, [1] port unreachable from B,
  // [2] datagram with TTL / hop limit 1, [3] time exceeded from R.
  for (const [file, unreach, exceeded] of [
    ["icmp-errors-v4.pcap", [3, 3], [11, 0]],
    ["icmp6-errors.pcap", [1, 4], [3, 0]],
  ] as const) {
    test(`${file}: port unreachable and time exceeded`, () => {
      const pkts = packets(file);
      assert.equal(pkts.length, 4);
      for (const [sent, error, [type, code]] of [
        [0, 1, unreach],
        [2, 3, exceeded],
      ] as const) {
        const orig = tupleOf(cls(pkts[sent]));
        const err = cls(pkts[error]);
        assert.equal(err.icmpError, true);
        assert.equal(err.icmpType, type);
        assert.equal(err.icmpCode, code);
        assert.deepEqual(tupleOf(err), reverse(orig));
        assert.deepEqual(keyOf(err), keyFromTuple(reverse(orig)));
      }
    });
  }
});

describe("IPv6 extension headers", () => {
  test("hop-by-hop (MLDv2 report with router alert): ICMPv6, addresses", () => {
    const pkts = packets("ipv6-hbh-mld.pcap");
    assert.ok(pkts.length >= 1);
    for (const p of pkts) {
      assert.equal(p[6], 0, "next header is hop-by-hop");
      const i = cls(p);
      assert.equal(i.proto, 58);
      assert.equal(i.icmpType, 143);
      assert.equal(i.icmpError, false);
      assert.equal(i.hashMode, HashMode.Addresses);
      assert.equal(formatAddress(6, i.dst), "ff02::16");
      assert.match(formatAddress(6, i.src), /^fe80:/);
    }
  });
  test("routing header (SRv6 SRH): ports behind it, current destination", () => {
    const pkts = packets("ipv6-srh.pcap");
    assert.equal(pkts.length, 1);
    assert.equal(pkts[0][6], 43);
    assert.deepEqual(tupleOf(cls(pkts[0])), {
      proto: 17,
      src: "fd01::1",
      sport: 40017,
      dst: "fd01::fe",
      dport: 5300,
    });
  });
  test("hop-by-hop + destination options, then also a fragment header", () => {
    const pkts = packets("ipv6-exthdr-frag.pcap");
    assert.equal(pkts.length, 4);
    const flow = { proto: 17, src: "fd01::1", sport: 40018, dst: "fd02::1", dport: 5300 };
    const plain = cls(pkts[0]);
    // HBH (8 bytes) -> destination options (8 bytes) -> UDP
    assert.deepEqual([pkts[0][6], pkts[0][40], pkts[0][48]], [0, 60, 17]);
    assert.equal(plain.fragKind, FragKind.None);
    assert.deepEqual(tupleOf(plain), flow);
    // The kernel keeps destination options without a routing header in the unfragmentable
    // part: HBH -> DSTOPTS -> fragment header at 56 (id at 60) -> UDP.
    assert.deepEqual([pkts[1][6], pkts[1][40], pkts[1][48], pkts[1][56]], [0, 60, 44, 17]);
    const id = U32(pkts[1], 60);
    const first = cls(pkts[1]);
    assert.equal(first.fragKind, FragKind.First);
    assert.equal(first.fragId, id);
    assert.deepEqual(tupleOf(first), flow);
    assertSameFlow(first, plain, "first fragment vs unfragmented datagram");
    for (const p of pkts.slice(2)) {
      const i = cls(p);
      assert.equal(i.fragKind, FragKind.Later);
      assert.equal(i.fragId, id);
      assert.equal(i.hashMode, HashMode.Addresses);
      assert.equal(i.proto, 17, "the fragment header's next header");
    }
  });
});

test("every fixture packet classifies the same from a 128-byte copy (NFQUEUE copy range)", () => {
  const files = readdirFixtures();
  assert.ok(files.length >= 15);
  let n = 0;
  for (const file of files) {
    for (const p of packets(file)) {
      const whole = cls(p);
      const cut = cls(p.subarray(0, Math.min(128, p.length)));
      assert.deepEqual(
        { ...tupleOf(cut), key: keyOf(cut), frag: cut.fragKind, id: cut.fragId },
        { ...tupleOf(whole), key: keyOf(whole), frag: whole.fragKind, id: whole.fragId },
        file,
      );
      n++;
    }
  }
  assert.ok(n >= 60, `${n} packets`);
});

function readdirFixtures(): string[] {
  return readdirSync(FIXTURES).filter((f) => f.endsWith(".pcap"));
}
