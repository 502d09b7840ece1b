// Hand-built packets for what the captures cannot show: SCTP (this kernel has no SCTP),
// SCTP over UDP, malformed and truncated headers, extension-header limits, odd ICMP
// quotes. Checksums are left zero on purpose: the classifier must never look at them.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ClassifyOptions,
  classify,
  defaultClassifyOptions,
  FragKind,
  flowHash,
  formatAddress,
  HashMode,
  InvalidReason,
  infoFromTuple,
  MAX_EXT_HEADERS,
  PacketInfo,
} from "../../src/packet/classify.js";

const OPTS = defaultClassifyOptions;
const ENCAP: ClassifyOptions = { sctpPortsOnly: true, sctpEncapPort: 9899 };

// ---- builders ----

function bytes(...parts: (Uint8Array | number[])[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const be16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const be32 = (v: number) => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

function addr4(s: string): number[] {
  return s.split(".").map(Number);
}

function addr6(s: string): number[] {
  const i = new PacketInfo();
  infoFromTuple(0, s, 0, s, 0, OPTS, i);
  return Array.from(i.src);
}

interface V4 {
  src?: string;
  dst?: string;
  proto: number;
  payload: Uint8Array | number[];
  id?: number;
  /** flags (3 bits) and offset in 8-byte units, as on the wire. */
  flagsOffset?: number;
  options?: number[];
  /** Overrides the computed total length. */
  total?: number;
  version?: number;
  ihl?: number;
}

function ipv4(p: V4): Uint8Array {
  const opts = p.options ?? [];
  const ihl = p.ihl ?? 5 + opts.length / 4;
  const total = p.total ?? 20 + opts.length + p.payload.length;
  return bytes(
    [((p.version ?? 4) << 4) | ihl, 0],
    be16(total),
    be16(p.id ?? 0x1234),
    be16(p.flagsOffset ?? 0x4000),
    [64, p.proto, 0, 0],
    addr4(p.src ?? "10.0.0.1"),
    addr4(p.dst ?? "10.0.0.2"),
    opts,
    p.payload,
  );
}

interface V6 {
  src?: string;
  dst?: string;
  next: number;
  payload: Uint8Array | number[];
  plen?: number;
}

function ipv6(p: V6): Uint8Array {
  return bytes(
    [0x60, 0, 0, 0],
    be16(p.plen ?? p.payload.length),
    [p.next, 64],
    addr6(p.src ?? "fd00::1"),
    addr6(p.dst ?? "fd00::2"),
    p.payload,
  );
}

/** Generic extension header (hop-by-hop, routing, destination options): 8-byte units. */
function ext(next: number, len8 = 1): number[] {
  const h = new Array(len8 * 8).fill(0);
  h[0] = next;
  h[1] = len8 - 1;
  h[2] = 1; // PadN
  h[3] = len8 * 8 - 4;
  return h;
}

function fragHdr(next: number, offset8: number, more: boolean, id: number): number[] {
  return [next, 0, ...be16((offset8 << 3) | (more ? 1 : 0)), ...be32(id)];
}

function tcp(sport: number, dport: number): number[] {
  return [
    ...be16(sport),
    ...be16(dport),
    ...be32(1),
    ...be32(0),
    0x50,
    0x02,
    0xff,
    0xff,
    0,
    0,
    0,
    0,
  ];
}

function udp(sport: number, dport: number, payload: number[] = [1, 2, 3, 4]): number[] {
  return [...be16(sport), ...be16(dport), ...be16(8 + payload.length), 0, 0, ...payload];
}

/** SCTP common header + one chunk (type 1 = INIT, 0 = DATA). */
function sctp(sport: number, dport: number, chunk: "init" | "data"): number[] {
  const common = [
    ...be16(sport),
    ...be16(dport),
    ...be32(chunk === "init" ? 0 : 0xabcdef01),
    0,
    0,
    0,
    0,
  ];
  const body =
    chunk === "init"
      ? [
          1,
          0,
          ...be16(20),
          ...be32(0x11223344),
          ...be32(65536),
          ...be16(10),
          ...be16(10),
          ...be32(1),
        ]
      : [0, 3, ...be16(20), ...be32(1), ...be16(0), ...be16(0), ...be32(0), 0xde, 0xad, 0xbe, 0xef];
  return [...common, ...body];
}

function icmp4(type: number, code: number, body: Uint8Array | number[]): number[] {
  return [type, code, 0, 0, 0, 0, ...(type === 3 && code === 4 ? be16(1280) : [0, 0]), ...body];
}

function icmp6(type: number, code: number, body: Uint8Array | number[]): number[] {
  return [type, code, 0, 0, ...(type === 2 ? be32(1280) : be32(0)), ...body];
}

function run(pkt: Uint8Array, opts: ClassifyOptions = OPTS, info = new PacketInfo()): PacketInfo {
  classify(pkt, 0, pkt.length, opts, info);
  return info;
}

function ok(pkt: Uint8Array, opts: ClassifyOptions = OPTS): PacketInfo {
  const i = run(pkt, opts);
  assert.equal(i.invalid, 0, `invalid ${i.invalid}`);
  return i;
}

function keyOf(i: PacketInfo): number[] {
  return Array.from(i.key.subarray(0, i.keyWords));
}

function fromTuple(
  proto: number,
  src: string,
  sport: number,
  dst: string,
  dport: number,
  opts = OPTS,
) {
  const i = new PacketInfo();
  infoFromTuple(proto, src, sport, dst, dport, opts, i);
  return i;
}

// ---- SCTP ----

describe("SCTP", () => {
  test("INIT over IPv4: hashed on ports only", () => {
    const i = ok(ipv4({ proto: 132, payload: sctp(36412, 38412, "init") }));
    assert.equal(i.proto, 132);
    assert.equal(i.hashMode, HashMode.Ports);
    assert.equal(i.keyWords, 2);
    assert.deepEqual([i.sport, i.dport], [36412, 38412]);
  });
  test("DATA from another address of the same association hashes the same (multihoming)", () => {
    const a = ok(ipv4({ src: "10.0.0.1", proto: 132, payload: sctp(5000, 5001, "data") }));
    const b = ok(
      ipv4({ src: "10.9.9.9", dst: "10.8.8.8", proto: 132, payload: sctp(5000, 5001, "data") }),
    );
    const c = ok(ipv6({ next: 132, payload: sctp(5000, 5001, "data") }));
    assert.equal(flowHash(a, 42), flowHash(b, 42));
    assert.equal(flowHash(a, 42), flowHash(c, 42));
  });
  test("sctpPortsOnly off: 5-tuple like TCP", () => {
    const opts = { sctpPortsOnly: false, sctpEncapPort: 0 };
    const i = ok(ipv6({ next: 132, payload: sctp(5000, 5001, "init") }), opts);
    assert.equal(i.hashMode, HashMode.FiveTuple);
    assert.equal(i.keyWords, 10);
  });
  test("SCTP over UDP (RFC 6951): inner ports when a UDP port is the encapsulation port", () => {
    // Client -> server: UDP dport is the encapsulation port.
    const fwd = ok(ipv4({ proto: 17, payload: udp(40000, 9899, sctp(5000, 5001, "init")) }), ENCAP);
    assert.equal(fwd.proto, 132);
    assert.equal(fwd.sctpEncap, true);
    assert.equal(fwd.hashMode, HashMode.Ports);
    assert.deepEqual([fwd.sport, fwd.dport], [5000, 5001]);
    // Same association over native SCTP: same hash.
    const native = ok(ipv4({ proto: 132, payload: sctp(5000, 5001, "data") }), ENCAP);
    assert.equal(flowHash(fwd, 1), flowHash(native, 1));
    // Only the service's port means encapsulation: a client whose source port happens to
    // be 9899 talking to DNS is plain UDP (its payload is no SCTP header).
    const dns = ok(ipv6({ next: 17, payload: udp(9899, 53, [1, 2, 3, 4, 5, 6, 7, 8]) }), ENCAP);
    assert.equal(dns.sctpEncap, false);
    assert.deepEqual([dns.proto, dns.sport, dns.dport], [17, 9899, 53]);
    // An ICMP error quoting the service's packet (source port 9899) is keyed on the inner
    // SCTP ports, swapped: the association's own flow.
    const quoted = ipv4({ proto: 17, payload: udp(9899, 40000, sctp(5001, 5000, "data")) });
    const err = ok(ipv4({ proto: 1, payload: icmp4(3, 4, quoted) }), ENCAP);
    assert.equal(err.sctpEncap, true);
    assert.deepEqual([err.sport, err.dport], [5000, 5001]);
    assert.equal(flowHash(err, 1), flowHash(fwd, 1));
  });
  test("SCTP over UDP: off (port 0) or other ports = plain UDP", () => {
    const pkt = ipv4({ proto: 17, payload: udp(40000, 9899, sctp(5000, 5001, "init")) });
    const off = ok(pkt, OPTS);
    assert.equal(off.proto, 17);
    assert.equal(off.sctpEncap, false);
    assert.deepEqual([off.sport, off.dport], [40000, 9899]);
    const other = ok(ipv4({ proto: 17, payload: udp(40000, 53) }), ENCAP);
    assert.deepEqual([other.proto, other.sport, other.dport], [17, 40000, 53]);
  });
  test("SCTP over UDP: fewer than 4 bytes after the UDP header is truncated", () => {
    const pkt = ipv4({ proto: 17, payload: udp(40000, 9899, [1, 2, 3]) });
    assert.equal(run(pkt, ENCAP).invalid, InvalidReason.Truncated);
  });
  test("SCTP over UDP, sctpPortsOnly off: outer addresses + inner ports", () => {
    const opts = { sctpPortsOnly: false, sctpEncapPort: 9899 };
    const i = ok(ipv4({ proto: 17, payload: udp(40000, 9899, sctp(5000, 5001, "init")) }), opts);
    assert.equal(i.hashMode, HashMode.FiveTuple);
    assert.deepEqual(keyOf(i), keyOf(fromTuple(132, "10.0.0.1", 5000, "10.0.0.2", 5001, opts)));
  });
});

// ---- ICMP errors quoting hand-built packets ----

describe("ICMP errors", () => {
  // The quoted packet went server -> client; the error (from a router) reaches the server,
  // so its key must be that of client -> server.
  test("v4 frag-needed quoting TCP: swapped addresses and ports", () => {
    const quoted = ipv4({ src: "10.0.0.2", dst: "10.0.0.1", proto: 6, payload: tcp(80, 40000) });
    const err = ok(
      ipv4({ src: "10.0.9.9", dst: "10.0.0.2", proto: 1, payload: icmp4(3, 4, quoted) }),
    );
    assert.equal(err.icmpError, true);
    assert.deepEqual(keyOf(err), keyOf(fromTuple(6, "10.0.0.1", 40000, "10.0.0.2", 80)));
  });
  test("RFC 792 minimum quote (IP header + 8 bytes) is enough", () => {
    const quoted = ipv4({ proto: 17, payload: udp(1000, 2000) }).subarray(0, 28);
    const err = ok(ipv4({ proto: 1, payload: icmp4(11, 0, quoted) }));
    assert.deepEqual([err.proto, err.sport, err.dport], [17, 2000, 1000]);
  });
  test("quote with only 4 bytes of L4 still gives the ports; 3 bytes does not", () => {
    const full = ipv4({ proto: 6, payload: tcp(1000, 2000) });
    const four = ok(ipv4({ proto: 1, payload: icmp4(3, 3, full.subarray(0, 24)) }));
    assert.deepEqual([four.sport, four.dport], [2000, 1000]);
    const three = run(ipv4({ proto: 1, payload: icmp4(3, 3, full.subarray(0, 23)) }));
    assert.equal(three.invalid, InvalidReason.IcmpInnerTruncated);
  });
  test("quote cut inside its IP header, or missing: inner truncated", () => {
    const full = ipv4({ proto: 6, payload: tcp(1000, 2000) });
    for (const n of [0, 1, 19]) {
      const r = run(ipv4({ proto: 1, payload: icmp4(3, 1, full.subarray(0, n)) }));
      assert.equal(r.invalid, InvalidReason.IcmpInnerTruncated, `quote of ${n} bytes`);
    }
    const opt = ipv4({ proto: 6, payload: tcp(1, 2), options: [1, 1, 1, 1] }).subarray(0, 22);
    assert.equal(
      run(ipv4({ proto: 1, payload: icmp4(3, 1, opt) })).invalid,
      InvalidReason.IcmpInnerTruncated,
    );
  });
  test("quote of the wrong family or with IHL < 5: inner invalid", () => {
    const v6 = ipv6({ next: 17, payload: udp(1, 2) });
    assert.equal(
      run(ipv4({ proto: 1, payload: icmp4(3, 3, v6) })).invalid,
      InvalidReason.IcmpInnerInvalid,
    );
    const v4 = ipv4({ proto: 17, payload: udp(1, 2) });
    assert.equal(
      run(ipv6({ next: 58, payload: icmp6(1, 4, v4) })).invalid,
      InvalidReason.IcmpInnerInvalid,
    );
    const badIhl = ipv4({ proto: 17, payload: udp(1, 2), ihl: 4 });
    assert.equal(
      run(ipv4({ proto: 1, payload: icmp4(3, 3, badIhl) })).invalid,
      InvalidReason.IcmpInnerInvalid,
    );
  });
  test("ICMP header shorter than 8 bytes on an error type: truncated", () => {
    const pkt = ipv4({ proto: 1, payload: [3, 4, 0, 0, 0, 0, 5] });
    assert.equal(run(pkt).invalid, InvalidReason.Truncated);
  });
  test("quote of a later fragment: swapped addresses only", () => {
    const quoted = ipv4({
      src: "10.0.0.2",
      dst: "10.0.0.1",
      proto: 17,
      payload: [9, 9, 9, 9, 9, 9, 9, 9],
      flagsOffset: 0x2000 | 185,
    });
    const err = ok(ipv4({ proto: 1, payload: icmp4(11, 1, quoted) }));
    assert.equal(err.hashMode, HashMode.Addresses);
    assert.deepEqual(keyOf(err), keyOf(fromTuple(1, "10.0.0.1", 0, "10.0.0.2", 0)));
  });
  test("quote of an ICMP echo: swapped addresses, like the echo flow", () => {
    const echo = ipv4({
      src: "10.0.0.2",
      dst: "10.0.0.1",
      proto: 1,
      payload: [8, 0, 0, 0, 0, 1, 0, 1],
    });
    const err = ok(ipv4({ proto: 1, payload: icmp4(3, 1, echo) }));
    assert.equal(err.icmpError, true);
    assert.equal(err.proto, 1);
    assert.equal(err.hashMode, HashMode.Addresses);
    assert.deepEqual(keyOf(err), keyOf(fromTuple(1, "10.0.0.1", 0, "10.0.0.2", 0)));
  });
  test("quote shorter than its own total length says: the rest is ignored", () => {
    // Quoted packet claims 22 bytes (IP + 2 bytes of UDP); bytes after it are not its ports.
    const quoted = bytes(ipv4({ proto: 17, payload: udp(1, 2), total: 22 }));
    const r = run(ipv4({ proto: 1, payload: icmp4(3, 3, quoted) }));
    assert.equal(r.invalid, InvalidReason.IcmpInnerTruncated);
  });
  test("ICMPv6 packet too big quoting SCTP: ports-only, swapped", () => {
    const quoted = ipv6({
      src: "fd00::2",
      dst: "fd00::1",
      next: 132,
      payload: sctp(5001, 5000, "data"),
    });
    const err = ok(
      ipv6({ src: "fd00::99", dst: "fd00::2", next: 58, payload: icmp6(2, 0, quoted) }),
    );
    assert.equal(err.hashMode, HashMode.Ports);
    assert.deepEqual([err.sport, err.dport], [5000, 5001]);
    assert.deepEqual(keyOf(err), keyOf(fromTuple(132, "fd00::1", 5000, "fd00::2", 5001)));
  });
  test("ICMPv6 error quoting SCTP over UDP", () => {
    const quoted = ipv6({ next: 17, payload: udp(9899, 40000, sctp(5001, 5000, "data")) });
    const err = ok(ipv6({ next: 58, payload: icmp6(1, 0, quoted) }), ENCAP);
    assert.equal(err.sctpEncap, true);
    assert.deepEqual([err.proto, err.sport, err.dport], [132, 5000, 5001]);
  });
  test("ICMP error quoting UDP from the encapsulation port but cut before SCTP: inner truncated", () => {
    const quoted = ipv4({ proto: 17, payload: udp(9899, 40000, sctp(1, 2, "init")) }).subarray(
      0,
      28,
    );
    assert.equal(
      run(ipv4({ proto: 1, payload: icmp4(3, 4, quoted) }), ENCAP).invalid,
      InvalidReason.IcmpInnerTruncated,
    );
  });
  test("ICMPv6 error quoting a packet with extension headers", () => {
    const quoted = ipv6({ next: 0, payload: [...ext(60), ...ext(6), ...tcp(443, 50000)] });
    const err = ok(ipv6({ next: 58, payload: icmp6(3, 0, quoted) }));
    assert.deepEqual([err.proto, err.sport, err.dport], [6, 50000, 443]);
    const cut = bytes(ipv6({ next: 58, payload: icmp6(3, 0, quoted.subarray(0, 50)) }));
    assert.equal(run(cut).invalid, InvalidReason.IcmpInnerTruncated);
  });
  test("ICMPv4 inside IPv6 / ICMPv6 inside IPv4 are just other protocols", () => {
    const a = ok(ipv6({ next: 1, payload: icmp4(3, 3, ipv4({ proto: 17, payload: udp(1, 2) })) }));
    assert.equal(a.icmpError, false);
    assert.equal(a.hashMode, HashMode.Addresses);
    const b = ok(ipv4({ proto: 58, payload: icmp6(1, 4, ipv6({ next: 17, payload: udp(1, 2) })) }));
    assert.equal(b.icmpError, false);
  });
  test("informational ICMP types (echo, router advert, neighbour solicitation): addresses", () => {
    for (const t of [0, 8, 9, 13])
      assert.equal(ok(ipv4({ proto: 1, payload: [t, 0, 0, 0] })).icmpError, false);
    for (const t of [128, 129, 133, 135, 143]) {
      assert.equal(ok(ipv6({ next: 58, payload: [t, 0, 0, 0] })).hashMode, HashMode.Addresses);
    }
    // One byte (the type) is enough to know it is not an error.
    const one = ok(ipv4({ proto: 1, payload: [8] }));
    assert.deepEqual([one.icmpType, one.icmpCode], [8, -1]);
  });
});

// ---- IPv4 header ----

describe("IPv4 header", () => {
  test("versions other than 4 and 6 are rejected", () => {
    for (let v = 0; v < 16; v++) {
      if (v === 4 || v === 6) continue;
      assert.equal(
        run(ipv4({ version: v, proto: 6, payload: tcp(1, 2) })).invalid,
        InvalidReason.BadVersion,
      );
    }
  });
  test("IHL below 5 is rejected", () => {
    for (let ihl = 0; ihl < 5; ihl++) {
      assert.equal(
        run(ipv4({ ihl, proto: 6, payload: tcp(1, 2) })).invalid,
        InvalidReason.BadHeaderLength,
      );
    }
  });
  test("options are skipped (IHL 6..15)", () => {
    const opt = new Array(40).fill(1); // NOPs
    for (let words = 1; words <= 10; words++) {
      const i = ok(ipv4({ proto: 6, payload: tcp(1111, 2222), options: opt.slice(0, words * 4) }));
      assert.deepEqual([i.sport, i.dport], [1111, 2222]);
    }
  });
  test("total length: 0 = unknown (BIG TCP), larger than the buffer = GSO / copy range", () => {
    for (const total of [0, 40, 1500, 65535]) {
      const i = ok(ipv4({ proto: 6, payload: tcp(1, 2), total }));
      assert.deepEqual([i.sport, i.dport], [1, 2], `total ${total}`);
    }
  });
  test("total length shorter than the header is bad; shorter than the ports = truncated", () => {
    assert.equal(
      run(ipv4({ proto: 6, payload: tcp(1, 2), total: 19 })).invalid,
      InvalidReason.BadTotalLength,
    );
    // Ethernet padding after a short packet must not be read as ports.
    assert.equal(
      run(ipv4({ proto: 6, payload: tcp(1, 2), total: 22 })).invalid,
      InvalidReason.Truncated,
    );
  });
  test("fragments: MF with offset 0 = first, offset > 0 = later, DF alone = none", () => {
    const first = ok(ipv4({ proto: 17, payload: udp(1, 2), flagsOffset: 0x2000, id: 0xabcd }));
    assert.deepEqual([first.fragKind, first.fragId, first.sport], [FragKind.First, 0xabcd, 1]);
    const later = ok(
      ipv4({ proto: 17, payload: [0xff, 0xff, 0xff, 0xff], flagsOffset: 0x0001, id: 0xabcd }),
    );
    assert.deepEqual(
      [later.fragKind, later.fragId, later.hashMode],
      [FragKind.Later, 0xabcd, HashMode.Addresses],
    );
    assert.deepEqual([later.sport, later.dport, later.keyWords], [0, 0, 2]);
    const df = ok(ipv4({ proto: 17, payload: udp(1, 2), flagsOffset: 0x4000 }));
    assert.equal(df.fragKind, FragKind.None);
    // A later fragment needs no L4 bytes at all.
    assert.equal(run(ipv4({ proto: 6, payload: [], flagsOffset: 0x0010 })).invalid, 0);
  });
  test("a later fragment of an ICMP error is not parsed as ICMP", () => {
    const i = ok(ipv4({ proto: 1, payload: [3, 4, 0, 0], flagsOffset: 0x0003 }));
    assert.equal(i.icmpError, false);
    assert.equal(i.hashMode, HashMode.Addresses);
  });
  test("protocols without ports: addresses only (GRE, ESP, no L4 bytes needed)", () => {
    for (const proto of [47, 50, 4, 255]) {
      const i = ok(ipv4({ proto, payload: [] }));
      assert.deepEqual([i.proto, i.hashMode, i.keyWords], [proto, HashMode.Addresses, 2]);
    }
  });
});

// ---- IPv6 extension headers ----

describe("IPv6 extension headers", () => {
  test(`up to ${MAX_EXT_HEADERS} headers are walked; one more is rejected`, () => {
    const chain = (n: number) => {
      const hs: number[] = [];
      for (let k = 0; k < n; k++) hs.push(...ext(k === n - 1 ? 6 : 60));
      return ipv6({ next: 60, payload: [...hs, ...tcp(1, 2)] });
    };
    const i = ok(chain(MAX_EXT_HEADERS));
    assert.deepEqual([i.proto, i.sport, i.dport], [6, 1, 2]);
    assert.equal(run(chain(MAX_EXT_HEADERS + 1)).invalid, InvalidReason.TooManyExtensionHeaders);
  });
  test("a long chain of destination options in a huge packet stays bounded", () => {
    const hs: number[] = [];
    for (let k = 0; k < 1000; k++) hs.push(...ext(60));
    assert.equal(
      run(ipv6({ next: 60, payload: hs })).invalid,
      InvalidReason.TooManyExtensionHeaders,
    );
  });
  test("hop-by-hop anywhere but first is rejected", () => {
    const pkt = ipv6({ next: 60, payload: [...ext(0), ...ext(17), ...udp(1, 2)] });
    assert.equal(run(pkt).invalid, InvalidReason.BadExtensionHeader);
  });
  test("two fragment headers are rejected", () => {
    const pkt = ipv6({
      next: 44,
      payload: [...fragHdr(44, 0, true, 1), ...fragHdr(17, 0, true, 1), ...udp(1, 2)],
    });
    assert.equal(run(pkt).invalid, InvalidReason.BadExtensionHeader);
  });
  test("extension header longer than the packet: truncated", () => {
    const h = ext(17, 4); // claims 32 bytes
    assert.equal(run(ipv6({ next: 60, payload: h.slice(0, 16) })).invalid, InvalidReason.Truncated);
    assert.equal(run(ipv6({ next: 60, payload: [17] })).invalid, InvalidReason.Truncated);
  });
  test("multi-word headers (routing with hdr ext len 2) and AH (4-byte units)", () => {
    const rh = ext(51, 3);
    // AH: next, payload len = (12 + 12 ICV) / 4 - 2 = 4, reserved, SPI, sequence, ICV.
    const ah = [17, 4, 0, 0, ...be32(0x1000), ...be32(1), ...new Array(12).fill(0xaa)];
    const i = ok(ipv6({ next: 43, payload: [...rh, ...ah, ...udp(53, 5353)] }));
    assert.deepEqual([i.proto, i.sport, i.dport], [17, 53, 5353]);
  });
  test("fragment header: first (ports), later (id, next header), atomic (not a fragment)", () => {
    const first = ok(
      ipv6({ next: 44, payload: [...fragHdr(17, 0, true, 0xfedcba98), ...udp(7, 8)] }),
    );
    assert.deepEqual([first.fragKind, first.fragId, first.sport], [FragKind.First, 0xfedcba98, 7]);
    const later = ok(ipv6({ next: 44, payload: [...fragHdr(17, 100, false, 0xfedcba98), 1, 2] }));
    assert.deepEqual(
      [later.fragKind, later.fragId, later.proto, later.keyWords],
      [FragKind.Later, 0xfedcba98, 17, 8],
    );
    const atomic = ok(ipv6({ next: 44, payload: [...fragHdr(6, 0, false, 5), ...tcp(9, 10)] }));
    assert.deepEqual([atomic.fragKind, atomic.sport], [FragKind.None, 9]);
  });
  test("no next header (59) and ESP: addresses only", () => {
    assert.equal(ok(ipv6({ next: 59, payload: [] })).hashMode, HashMode.Addresses);
    assert.equal(ok(ipv6({ next: 60, payload: [...ext(50), 1, 2, 3, 4] })).proto, 50);
  });
  test("payload length 0 (jumbogram / BIG TCP) uses the bytes present", () => {
    const i = ok(ipv6({ next: 6, payload: tcp(1, 2), plen: 0 }));
    assert.deepEqual([i.sport, i.dport], [1, 2]);
  });
  test("payload length shorter than the ports: truncated (padding is not read)", () => {
    assert.equal(
      run(ipv6({ next: 6, payload: tcp(1, 2), plen: 3 })).invalid,
      InvalidReason.Truncated,
    );
  });
});

// ---- lengths and bounds ----

describe("truncation and bounds", () => {
  // For each packet: the length from which it classifies, and from there on the key never
  // changes (only bytes up to the ports are read). Below it: invalid, never an exception.
  const cases: [string, Uint8Array, number, ClassifyOptions][] = [
    [
      "TCP v4 with 4 bytes of options: IP 24 + ports 4",
      ipv4({ proto: 6, payload: tcp(1, 2), options: [1, 1, 1, 1] }),
      28,
      OPTS,
    ],
    [
      "UDP v6 behind HBH + DSTOPTS: 40 + 8 + 8 + 4",
      ipv6({ next: 0, payload: [...ext(60), ...ext(17), ...udp(1, 2)] }),
      60,
      OPTS,
    ],
    [
      "SCTP over UDP v4: 20 + 8 + 4",
      ipv4({ proto: 17, payload: udp(1, 9899, sctp(3, 4, "init")) }),
      32,
      ENCAP,
    ],
    [
      "ICMP error v4: 20 + 8 + 20 + 4",
      ipv4({ proto: 1, payload: icmp4(3, 4, ipv4({ proto: 6, payload: tcp(1, 2) })) }),
      52,
      OPTS,
    ],
    [
      "ICMPv6 error: 40 + 8 + 40 + 4",
      ipv6({ next: 58, payload: icmp6(2, 0, ipv6({ next: 17, payload: udp(1, 2) })) }),
      92,
      OPTS,
    ],
    ["ICMP echo v4: 20 + type", ipv4({ proto: 1, payload: [8, 0, 0, 0, 0, 1, 0, 1] }), 21, OPTS],
    [
      "v6 later fragment: 40 + 8",
      ipv6({ next: 44, payload: [...fragHdr(17, 3, true, 77), 0, 0, 0, 0] }),
      48,
      OPTS,
    ],
  ];
  for (const [name, pkt, needed, opts] of cases) {
    test(`${name}: valid from ${needed} bytes on`, () => {
      const full = ok(pkt, opts);
      const info = new PacketInfo();
      for (let len = 0; len <= pkt.length; len++) {
        const r = classify(pkt, 0, len, opts, info);
        if (len < needed) {
          assert.notEqual(r, 0, `length ${len}`);
        } else {
          assert.equal(r, 0, `length ${len}`);
          assert.deepEqual(keyOf(info), keyOf(full), `length ${len}`);
        }
      }
    });
  }
  test("offset inside a larger buffer (as in an NFQUEUE batch)", () => {
    const pkt = ipv4({ proto: 6, payload: tcp(1, 2) });
    const buf = bytes([0xde, 0xad, 0xbe], pkt, [0xff, 0xff, 0xff]);
    const i = new PacketInfo();
    assert.equal(classify(buf, 3, pkt.length, OPTS, i), 0);
    assert.deepEqual(keyOf(i), keyOf(ok(pkt)));
  });
  test("offset/len outside the buffer or not integers: BadBounds, no exception", () => {
    const pkt = ipv4({ proto: 6, payload: tcp(1, 2) });
    const i = new PacketInfo();
    for (const [off, len] of [
      [-1, 10],
      [0, pkt.length + 1],
      [pkt.length, 1],
      [1.5, 10],
      [0, Number.NaN],
      [Number.POSITIVE_INFINITY, 0],
      [0, -4],
    ]) {
      assert.equal(classify(pkt, off, len, OPTS, i), InvalidReason.BadBounds, `${off},${len}`);
    }
    assert.equal(classify(pkt, pkt.length, 0, OPTS, i), InvalidReason.Truncated);
  });
  test("an invalid result after a valid one leaves nothing usable behind", () => {
    const i = ok(ipv4({ proto: 6, payload: tcp(1, 2) }));
    classify(new Uint8Array([0x45]), 0, 1, OPTS, i);
    assert.equal(i.invalid, InvalidReason.Truncated);
    assert.equal(i.keyWords, 0);
  });
  test("reused PacketInfo: v4 after v6 carries no stale address bytes into the key", () => {
    const i = new PacketInfo();
    classify(ipv6({ next: 6, payload: tcp(1, 2) }), 0, 60, OPTS, i);
    const v4 = ipv4({ src: "1.2.3.4", dst: "5.6.7.8", proto: 6, payload: tcp(1, 2) });
    classify(v4, 0, v4.length, OPTS, i);
    assert.equal(formatAddress(4, i.src), "1.2.3.4");
    assert.deepEqual(keyOf(i), keyOf(fromTuple(6, "1.2.3.4", 1, "5.6.7.8", 2)));
  });
});
