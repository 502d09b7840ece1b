// Flow-key layout (nft concatenation: every field padded to 4 bytes, ports big-endian then
// two zero bytes), kernel hash vectors, textual tuples and formatting.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { reciprocalScale } from "../../src/hash/jhash.js";
import {
  defaultClassifyOptions,
  FragKind,
  flowHash,
  formatInfo,
  HashMode,
  InvalidReason,
  infoFromTuple,
  invalidReasonNames,
  keyWordsFor,
  layoutKey,
  PacketInfo,
  protoNumber,
} from "../../src/packet/classify.js";

const OPTS = defaultClassifyOptions;

function keyHex(i: PacketInfo): string {
  return Buffer.from(i.keyBytes.subarray(0, i.keyWords * 4)).toString("hex");
}

function tuple(proto: string, src: string, sport: number, dst: string, dport: number) {
  const i = new PacketInfo();
  infoFromTuple(proto, src, sport, dst, dport, OPTS, i);
  return i;
}

describe("key layout", () => {
  test("IPv4 5-tuple: saddr daddr sport(2)+00 00 dport(2)+00 00 = 16 bytes", () => {
    const i = tuple("tcp", "10.0.0.1", 0x1234, "192.168.1.2", 80);
    assert.equal(i.hashMode, HashMode.FiveTuple);
    assert.equal(i.keyWords, 4);
    assert.equal(keyHex(i), "0a000001c0a80102" + "12340000" + "00500000");
  });
  test("IPv6 5-tuple: 16 + 16 + 4 + 4 = 40 bytes", () => {
    const i = tuple("udp", "2001:db8::1", 53, "2001:db8::ff:2", 65535);
    assert.equal(i.keyWords, 10);
    assert.equal(
      keyHex(i),
      "20010db8000000000000000000000001" +
        "20010db8000000000000000000ff0002" +
        "00350000" +
        "ffff0000",
    );
  });
  test("address-only: 8 / 32 bytes", () => {
    const v4 = tuple("icmp", "10.0.0.1", 0, "10.0.0.2", 0);
    assert.equal(v4.hashMode, HashMode.Addresses);
    assert.equal(keyHex(v4), "0a0000010a000002");
    const v6 = tuple("icmpv6", "fd00::1", 0, "fd00::2", 0);
    assert.equal(v6.keyWords, 8);
    assert.equal(keyHex(v6), `fd00${"0".repeat(26)}01fd00${"0".repeat(26)}02`);
  });
  test("ports-only (SCTP): 8 bytes, the same for both families", () => {
    const v4 = tuple("sctp", "10.0.0.1", 5000, "10.0.0.2", 36412);
    const v6 = tuple("sctp", "fd00::1", 5000, "fd00::2", 36412);
    assert.equal(v4.hashMode, HashMode.Ports);
    assert.equal(keyHex(v4), "13880000" + "8e3c0000");
    assert.equal(keyHex(v6), keyHex(v4));
    assert.equal(flowHash(v4, 7), flowHash(v6, 7));
  });
  test("SCTP with sctpPortsOnly off: 5-tuple", () => {
    const i = new PacketInfo();
    infoFromTuple(132, "10.0.0.1", 1, "10.0.0.2", 2, { sctpPortsOnly: false, sctpEncapPort: 0 }, i);
    assert.equal(i.hashMode, HashMode.FiveTuple);
    assert.equal(i.keyWords, 4);
  });
  test("keyWordsFor matches layoutKey for every mode and family", () => {
    const i = new PacketInfo();
    for (const family of [4, 6] as const) {
      for (const mode of [HashMode.FiveTuple, HashMode.Addresses, HashMode.Ports]) {
        i.family = family;
        i.hashMode = mode;
        layoutKey(i);
        assert.equal(i.keyWords, keyWordsFor(mode, family));
      }
    }
  });
  test("re-laying a key for another mode leaves no stale bytes in use", () => {
    const i = tuple("udp", "fd00::1", 1, "fd00::2", 2);
    const five = flowHash(i, 1);
    i.hashMode = HashMode.Ports;
    layoutKey(i);
    assert.equal(flowHash(i, 1), flowHash(tuple("sctp", "10.1.1.1", 1, "10.2.2.2", 2), 1));
    i.hashMode = HashMode.FiveTuple;
    layoutKey(i);
    assert.equal(flowHash(i, 1), five);
  });
});

// Marks the kernel computed (nft `ct mark set jhash ... mod M seed S` on output, read back
// with conntrack -L) for UDP flows, on this project's VM, kernel 6.18. The e2e parity test
// checks hundreds more; these keep the unit suite honest without root.
describe("kernel vectors", () => {
  const cases: [string, HashMode, string, number, string, number, number, number, number][] = [
    ["v4 5-tuple", HashMode.FiveTuple, "127.0.0.1", 1234, "127.0.0.1", 80, 0x1234, 65537, 24],
    ["v6 5-tuple", HashMode.FiveTuple, "::1", 1234, "::1", 80, 0x1234, 65537, 3027],
    [
      "v4 5-tuple",
      HashMode.FiveTuple,
      "10.9.8.7",
      40000,
      "10.1.2.3",
      443,
      0xdeadbeef,
      1000003,
      760230,
    ],
    [
      "v4 addresses",
      HashMode.Addresses,
      "10.9.8.7",
      40000,
      "10.1.2.3",
      443,
      0xdeadbeef,
      1000003,
      459666,
    ],
    ["v4 ports", HashMode.Ports, "10.9.8.7", 40000, "10.1.2.3", 443, 0xdeadbeef, 1000003, 940680],
    [
      "v6 5-tuple",
      HashMode.FiveTuple,
      "2001:db8::7",
      40000,
      "2001:db8::1:2:3",
      443,
      0xdeadbeef,
      1000003,
      758114,
    ],
    [
      "v6 addresses",
      HashMode.Addresses,
      "2001:db8::7",
      40000,
      "2001:db8::1:2:3",
      443,
      0xdeadbeef,
      1000003,
      572639,
    ],
    [
      "v6 ports",
      HashMode.Ports,
      "2001:db8::7",
      40000,
      "2001:db8::1:2:3",
      443,
      0xdeadbeef,
      1000003,
      940680,
    ],
  ];
  for (const [name, mode, src, sport, dst, dport, seed, mod, mark] of cases) {
    test(`${name} seed 0x${seed.toString(16)} mod ${mod} = ${mark}`, () => {
      const i = tuple("udp", src, sport, dst, dport);
      i.hashMode = mode;
      layoutKey(i);
      assert.equal(reciprocalScale(flowHash(i, seed), mod), mark);
    });
  }
});

describe("infoFromTuple", () => {
  test("protocol by name or number", () => {
    assert.equal(protoNumber("TCP"), 6);
    assert.equal(protoNumber("udp"), 17);
    assert.equal(protoNumber("sctp"), 132);
    assert.equal(protoNumber("icmpv6"), 58);
    assert.equal(protoNumber("47"), 47);
    assert.throws(() => protoNumber("bogus"));
    assert.equal(
      flowHash(tuple("6", "1.2.3.4", 1, "5.6.7.8", 2), 0),
      flowHash(tuple("tcp", "1.2.3.4", 1, "5.6.7.8", 2), 0),
    );
  });
  test("ports are ignored for protocols hashed on addresses", () => {
    const a = tuple("icmp", "1.2.3.4", 1, "5.6.7.8", 2);
    const b = tuple("icmp", "1.2.3.4", 0, "5.6.7.8", 0);
    assert.equal(a.sport, 0);
    assert.equal(flowHash(a, 9), flowHash(b, 9));
  });
  test("rejects mixed families, bad addresses, bad ports", () => {
    const i = new PacketInfo();
    assert.throws(() => infoFromTuple("tcp", "10.0.0.1", 1, "fd00::1", 2, OPTS, i), /mixed/);
    assert.throws(() => infoFromTuple("tcp", "10.0.0.300", 1, "10.0.0.1", 2, OPTS, i));
    assert.throws(() => infoFromTuple("tcp", "10.0.0.1", 70000, "10.0.0.2", 2, OPTS, i), /port/);
    assert.throws(() => infoFromTuple("tcp", "10.0.0.1", -1, "10.0.0.2", 2, OPTS, i), /port/);
    assert.throws(() => infoFromTuple(300, "10.0.0.1", 1, "10.0.0.2", 2, OPTS, i), /protocol/);
  });
  test("an IPv6 tuple after an IPv4 one leaves no stale bytes", () => {
    const i = new PacketInfo();
    infoFromTuple("udp", "fd00::1", 1, "fd00::2", 2, OPTS, i);
    infoFromTuple("udp", "10.0.0.1", 1, "10.0.0.2", 2, OPTS, i);
    assert.deepEqual(Array.from(i.src.subarray(4)), new Array(12).fill(0));
    assert.equal(flowHash(i, 3), flowHash(tuple("udp", "10.0.0.1", 1, "10.0.0.2", 2), 3));
  });
});

describe("formatInfo", () => {
  test("5-tuple, IPv6 brackets, addresses, ports", () => {
    assert.equal(
      formatInfo(tuple("tcp", "10.0.0.1", 1234, "10.0.0.2", 80)),
      "tcp 10.0.0.1:1234 -> 10.0.0.2:80 (hash 5-tuple)",
    );
    assert.equal(
      formatInfo(tuple("udp", "fd00::1", 53, "fd00:0:0:0:0:0:0:2", 5353)),
      "udp [fd00::1]:53 -> [fd00::2]:5353 (hash 5-tuple)",
    );
    assert.equal(
      formatInfo(tuple("icmp", "10.0.0.1", 0, "10.0.0.2", 0)),
      "icmp 10.0.0.1 -> 10.0.0.2 (hash addresses)",
    );
    assert.equal(
      formatInfo(tuple("sctp", "10.0.0.1", 5000, "10.0.0.2", 5001)),
      "sctp 10.0.0.1:5000 -> 10.0.0.2:5001 (hash ports)",
    );
  });
  test("fragment, ICMP error and invalid notes", () => {
    const i = tuple("udp", "10.0.0.1", 1, "10.0.0.2", 2);
    i.fragKind = FragKind.First;
    i.fragId = 0xbeef;
    i.icmpError = true;
    i.icmpType = 3;
    i.icmpCode = 4;
    assert.equal(
      formatInfo(i),
      "udp 10.0.0.1:1 -> 10.0.0.2:2 (hash 5-tuple, icmp error type 3 code 4, fragment first id 0xbeef)",
    );
    i.invalid = InvalidReason.Truncated;
    assert.equal(formatInfo(i), "invalid packet (truncated)");
  });
  test("every reason has a name", () => {
    for (const v of Object.values(InvalidReason)) assert.ok(invalidReasonNames[v], String(v));
    assert.equal(invalidReasonNames.length, Object.keys(InvalidReason).length);
  });
});
