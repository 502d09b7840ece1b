// The compiled flow matcher on classified packets (hand-built bytes through classify()):
// priorities, families, any-protocol flows, port ranges, byte matches, ICMP errors and
// echo, fragments; and the l4Offset/l4Length the classifier reports for byte matches.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FlowError, FlowMatcher, type FlowSpec, parseFlow } from "../../src/flows/index.js";
import {
  type ClassifyOptions,
  classify,
  defaultClassifyOptions,
  PacketInfo,
} from "../../src/packet/classify.js";
import { addressBytes } from "../helpers/craft.js";

const OPTS = defaultClassifyOptions;
const ENCAP: ClassifyOptions = { sctpPortsOnly: true, sctpEncapPort: 9899 };

// ---- packet builders (checksums zero: neither classify nor match reads them) ----

const be16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const be32 = (v: number) => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const addr = (s: string) => Array.from(addressBytes(s));

const TCP_SYN = 0x02;
const TCP_ACK = 0x10;

function tcp(sport: number, dport: number, flags = TCP_ACK, payload: number[] = []): number[] {
  return [
    ...be16(sport),
    ...be16(dport),
    ...be32(1000),
    ...be32(0),
    0x50,
    flags,
    ...be16(65535),
    0,
    0,
    0,
    0,
    ...payload,
  ];
}

function udp(sport: number, dport: number, payload: number[] = []): number[] {
  return [...be16(sport), ...be16(dport), ...be16(8 + payload.length), 0, 0, ...payload];
}

/** SCTP common header + one chunk header (type, flags, length 4). */
function sctp(sport: number, dport: number, chunk = 1): number[] {
  return [...be16(sport), ...be16(dport), ...be32(0x11223344), 0, 0, 0, 0, chunk, 0, 0, 4];
}

function ipv4(
  src: string,
  dst: string,
  proto: number,
  payload: number[],
  o: { total?: number; flagsOffset?: number; id?: number } = {},
): number[] {
  return [
    0x45,
    0,
    ...be16(o.total ?? 20 + payload.length),
    ...be16(o.id ?? 0x1234),
    ...be16(o.flagsOffset ?? 0x4000),
    64,
    proto,
    0,
    0,
    ...addr(src),
    ...addr(dst),
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
    ...addr(src),
    ...addr(dst),
    ...payload,
  ];
}

const info = new PacketInfo();

function classified(pkt: number[], opts: ClassifyOptions = OPTS): Uint8Array {
  const bytes = Uint8Array.from(pkt);
  assert.equal(classify(bytes, 0, bytes.length, opts, info), 0, "packet must classify");
  return bytes;
}

/** Name of the flow the packet matches, or null. */
function matchName(m: FlowMatcher, pkt: number[], opts: ClassifyOptions = OPTS): string | null {
  const bytes = classified(pkt, opts);
  const i = m.match(info, bytes);
  return i < 0 ? null : (m.flows[i]?.name ?? `bad index ${i}`);
}

const f = (input: Parameters<typeof parseFlow>[0]): FlowSpec => parseFlow(input);

const CLIENT4 = "192.0.2.10";
const VIP4 = "10.200.0.1";
const CLIENT6 = "2001:db8::10";
const VIP6 = "fd00:200::1";

// ---- the classifier's L4 offset ----

describe("classify: l4Offset and l4Length for byte matches", () => {
  test("TCP over IPv4: the header after the IP header, to the end of the packet", () => {
    classified(ipv4(CLIENT4, VIP4, 6, tcp(1000, 80, TCP_SYN, [1, 2, 3])));
    assert.equal(info.l4Offset, 20);
    assert.equal(info.l4Length, 23);
  });

  test("link padding past the IP total length is not counted", () => {
    classified([...ipv4(CLIENT4, VIP4, 17, udp(1000, 53, [9])), 0, 0, 0, 0]);
    assert.equal(info.l4Offset, 20);
    assert.equal(info.l4Length, 9);
  });

  test("UDP over IPv6 behind a destination-options header", () => {
    const dstopts = [17, 0, 1, 4, 0, 0, 0, 0];
    classified(ipv6(CLIENT6, VIP6, 60, [...dstopts, ...udp(1000, 53)]));
    assert.equal(info.l4Offset, 48);
    assert.equal(info.l4Length, 8);
  });

  test("SCTP over UDP: the inner SCTP header", () => {
    classified(ipv4(CLIENT4, VIP4, 17, udp(5000, 9899, sctp(3000, 3868))), ENCAP);
    assert.equal(info.proto, 132);
    assert.equal(info.l4Offset, 28);
    assert.equal(info.l4Length, 16);
  });

  test("an ICMP error: the quoted L4 header", () => {
    const quote = ipv4(VIP4, CLIENT4, 6, tcp(80, 40000).slice(0, 8), { total: 1500 });
    classified(ipv4("198.51.100.1", VIP4, 1, [3, 4, 0, 0, 0, 0, ...be16(1400), ...quote]));
    assert.equal(info.l4Offset, 20 + 8 + 20);
    assert.equal(info.l4Length, 8);
  });

  test("no ports, no L4 offset: echo, later fragments, other protocols", () => {
    classified(ipv4(CLIENT4, VIP4, 1, [8, 0, 0, 0, 0, 1, 0, 1]));
    assert.equal(info.l4Offset, -1);
    assert.equal(info.l4Length, 0);
    classified(ipv4(CLIENT4, VIP4, 17, [1, 2, 3, 4, 5, 6, 7, 8], { flagsOffset: 0x0010 }));
    assert.equal(info.l4Offset, -1);
    classified(ipv4(CLIENT4, VIP4, 47, [0, 0, 8, 0]));
    assert.equal(info.l4Offset, -1);
  });
});

// ---- matching ----

describe("FlowMatcher: priorities", () => {
  const m = new FlowMatcher([
    f({ name: "catchall", target: "lb0", priority: -100 }),
    f({ name: "web", target: "lb1", priority: 10, protocols: "tcp", dsts: VIP4, dports: "80,443" }),
    f({
      name: "web-admin",
      target: "lb2",
      priority: 20,
      protocols: "tcp",
      dsts: VIP4,
      srcs: "192.0.2.0/24",
      dports: "443",
    }),
    f({ name: "b-tie", target: "lb3", priority: 5, protocols: "tcp,udp", dsts: "10.200.0.0/16" }),
    f({ name: "a-tie", target: "lb4", priority: 5, protocols: "udp", dsts: "10.200.0.0/16" }),
  ]);

  test("the flows are kept sorted: priority descending, then name", () => {
    assert.deepEqual(
      m.flows.map((x) => x.name),
      ["web-admin", "web", "a-tie", "b-tie", "catchall"],
    );
    assert.equal(m.indexOf("web"), 1);
    assert.equal(m.indexOf("nope"), -1);
    assert.deepEqual(Array.from(m.hashOnAddresses), [0, 0, 0, 0, 1]);
  });

  test("the highest-priority matching flow wins", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(1000, 443))), "web-admin");
    assert.equal(matchName(m, ipv4("198.51.100.7", VIP4, 6, tcp(1000, 443))), "web");
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(1000, 80))), "web");
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(1000, 22))), "b-tie");
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.9.9", 6, tcp(1000, 80))), "b-tie");
    assert.equal(matchName(m, ipv4(CLIENT4, "10.9.0.1", 6, tcp(1000, 80))), "catchall");
  });

  test("equal priorities: the name decides", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 17, udp(1000, 53))), "a-tie");
  });

  test("the order of the input does not matter", () => {
    const r = new FlowMatcher([...m.flows].reverse());
    assert.deepEqual(r.flows, m.flows);
  });

  test("duplicate names and invalid flows are refused", () => {
    assert.throws(() => new FlowMatcher([m.flows[0], m.flows[0]]), {
      name: "FlowError",
      message: 'duplicate flow name "web-admin"',
    });
    const bad = { ...m.flows[0], dports: ["2000-1000"] };
    assert.throws(() => new FlowMatcher([bad]), FlowError);
  });

  test("no flows: nothing matches", () => {
    const none = new FlowMatcher([]);
    classified(ipv4(CLIENT4, VIP4, 6, tcp(1000, 80)));
    assert.equal(none.match(info, new Uint8Array(0)), -1);
  });

  test("an invalid packet matches nothing", () => {
    const bytes = Uint8Array.from(ipv4(CLIENT4, VIP4, 6, tcp(1000, 80)).slice(0, 22));
    assert.notEqual(classify(bytes, 0, bytes.length, OPTS, info), 0);
    assert.equal(m.match(info, bytes), -1);
  });
});

describe("FlowMatcher: addresses, families, protocols, ports", () => {
  const m = new FlowMatcher([
    f({ name: "v4", target: "a", priority: 3, protocols: "tcp", dsts: "10.200.0.0/24" }),
    f({ name: "v6", target: "b", priority: 3, protocols: "tcp", dsts: "fd00:200::/64" }),
    f({ name: "both", target: "c", priority: 2, protocols: "tcp", dsts: "10.0.0.0/8,fd00::/16" }),
    f({ name: "srcs6", target: "d", priority: 4, protocols: "udp", srcs: "2001:db8:1::/48" }),
    f({
      name: "ranges",
      target: "e",
      priority: 5,
      protocols: "udp,sctp",
      dports: "1000-2000,3000",
      sports: "53",
    }),
    f({ name: "anyproto", target: "f", priority: 1, dsts: "10.200.0.1,fd00:200::1" }),
  ]);

  test("IPv4 and IPv6 destinations", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.0.77", 6, tcp(1, 2))), "v4");
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.1.77", 6, tcp(1, 2))), "both");
    assert.equal(matchName(m, ipv6(CLIENT6, "fd00:200::77", 6, tcp(1, 2))), "v6");
    assert.equal(matchName(m, ipv6(CLIENT6, "fd00:201::77", 6, tcp(1, 2))), "both");
    assert.equal(matchName(m, ipv6(CLIENT6, "fd01::1", 6, tcp(1, 2))), null);
    assert.equal(matchName(m, ipv4(CLIENT4, "11.0.0.1", 6, tcp(1, 2))), null);
  });

  test("CIDR edges", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.0.0", 6, tcp(1, 2))), "v4");
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.0.255", 6, tcp(1, 2))), "v4");
    assert.equal(matchName(m, ipv4(CLIENT4, "10.199.255.255", 6, tcp(1, 2))), "both");
    assert.equal(matchName(m, ipv4(CLIENT4, "10.255.255.255", 6, tcp(1, 2))), "both");
    assert.equal(matchName(m, ipv4(CLIENT4, "9.255.255.255", 6, tcp(1, 2))), null);
    assert.equal(matchName(m, ipv6(CLIENT6, "fd00:200::ffff:ffff:ffff:ffff", 6, tcp(1, 2))), "v6");
    assert.equal(
      matchName(m, ipv6(CLIENT6, "fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 6, tcp(1, 2))),
      "both",
    );
  });

  test("sources, per family: an IPv4 packet never matches IPv6-only sources", () => {
    assert.equal(matchName(m, ipv6("2001:db8:1:2::3", "fd99::1", 17, udp(1, 2))), "srcs6");
    assert.equal(matchName(m, ipv6("2001:db8:2::3", "fd99::1", 17, udp(1, 2))), null);
    assert.equal(matchName(m, ipv4(CLIENT4, "10.99.0.1", 17, udp(1, 2))), null);
  });

  test("port ranges, per protocol, with their edges", () => {
    const at = (proto: number, sport: number, dport: number) =>
      matchName(
        m,
        ipv4(CLIENT4, "10.99.0.1", proto, proto === 132 ? sctp(sport, dport) : udp(sport, dport)),
      );
    assert.equal(at(17, 53, 1000), "ranges");
    assert.equal(at(17, 53, 2000), "ranges");
    assert.equal(at(17, 53, 3000), "ranges");
    assert.equal(at(132, 53, 1500), "ranges");
    assert.equal(at(17, 53, 999), null);
    assert.equal(at(17, 53, 2001), null);
    assert.equal(at(17, 54, 1500), null);
    // TCP is not among the flow's protocols.
    assert.equal(matchName(m, ipv4(CLIENT4, "10.99.0.1", 6, tcp(53, 1500))), "both");
  });

  test("a flow without protocols takes every protocol", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.0.1", 47, [0, 0, 8, 0])), "anyproto");
    assert.equal(
      matchName(m, ipv4(CLIENT4, "10.200.0.1", 50, [0, 0, 0, 1, 0, 0, 0, 1])),
      "anyproto",
    );
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.0.1", 17, udp(1, 2))), "anyproto");
    assert.equal(matchName(m, ipv6(CLIENT6, "fd00:200::1", 17, udp(1, 2))), "anyproto");
    // GRE to an address only TCP flows cover: nothing.
    assert.equal(matchName(m, ipv4(CLIENT4, "10.200.0.2", 47, [0, 0, 8, 0])), null);
  });

  test("later fragments: only flows that need no ports", () => {
    const later = ipv4(CLIENT4, "10.99.0.1", 17, [1, 2, 3, 4, 5, 6, 7, 8], { flagsOffset: 0x0020 });
    assert.equal(matchName(m, later), null); // "ranges" needs ports
    const laterTcp = ipv4(CLIENT4, "10.200.0.9", 6, [1, 2, 3, 4, 5, 6, 7, 8], {
      flagsOffset: 0x0020,
    });
    assert.equal(matchName(m, laterTcp), "v4");
    const first = ipv4(CLIENT4, "10.99.0.1", 17, udp(53, 1500, [1, 2, 3, 4]), {
      flagsOffset: 0x2000,
    });
    assert.equal(matchName(m, first), "ranges");
  });
});

describe("FlowMatcher: byte matches", () => {
  const m = new FlowMatcher([
    f({
      name: "syn",
      target: "a",
      priority: 10,
      protocols: "tcp",
      dports: "80",
      match: "tcp[13:1] & 0x02 = 0x02",
    }),
    f({ name: "iperf", target: "b", priority: 9, protocols: "tcp", match: "tcp[2:2] = 5001" }),
    f({
      name: "flags",
      target: "c",
      priority: 8,
      protocols: "tcp",
      match: "tcp[12:2] & 0x01ff = 0x0010",
    }),
    f({
      name: "magic",
      target: "d",
      priority: 7,
      protocols: "udp,tcp",
      match: "udp[8:4] = 0xdeadbeef",
    }),
    f({ name: "init", target: "e", priority: 6, protocols: "sctp", match: "sctp[12:1] = 1" }),
    f({ name: "rest", target: "z", priority: 0 }),
  ]);

  test("SYN or not", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(40000, 80, TCP_SYN))), "syn");
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(40000, 80, TCP_SYN | TCP_ACK))), "syn");
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(40000, 80, TCP_ACK))), "flags");
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(40000, 81, TCP_SYN))), "magic");
  });

  test("a 2-byte field", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(40000, 5001, 0x18))), "iperf");
    assert.equal(matchName(m, ipv6(CLIENT6, VIP6, 6, tcp(40000, 5001, 0x18))), "iperf");
  });

  test("a 4-byte value with the top bit set, in the UDP payload", () => {
    assert.equal(
      matchName(m, ipv4(CLIENT4, VIP4, 17, udp(1, 2, [0xde, 0xad, 0xbe, 0xef]))),
      "magic",
    );
    assert.equal(
      matchName(m, ipv4(CLIENT4, VIP4, 17, udp(1, 2, [0xde, 0xad, 0xbe, 0xee]))),
      "rest",
    );
  });

  test("terms for another protocol do not apply: TCP passes the udp[] flow", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 6, tcp(40000, 22, 0x18))), "magic");
  });

  test("bytes beyond what is present (short packet or short copy) do not match", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 17, udp(1, 2, [0xde, 0xad, 0xbe]))), "rest");
    // The copy range cut the packet: the IP header says 32 bytes, 30 are here.
    const pkt = ipv4(CLIENT4, VIP4, 17, udp(1, 2, [0xde, 0xad, 0xbe, 0xef])).slice(0, 30);
    assert.equal(matchName(m, pkt), "rest");
  });

  test("SCTP, native and over UDP: the SCTP header", () => {
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 132, sctp(3000, 3868, 1))), "init");
    assert.equal(matchName(m, ipv4(CLIENT4, VIP4, 132, sctp(3000, 3868, 0))), "rest");
    assert.equal(
      matchName(m, ipv4(CLIENT4, VIP4, 17, udp(5000, 9899, sctp(3000, 3868, 1))), ENCAP),
      "init",
    );
    // Without the encapsulation port it is plain UDP, and the udp[] term reads its payload.
    assert.equal(
      matchName(m, ipv4(CLIENT4, VIP4, 17, udp(5000, 9899, sctp(3000, 3868, 1)))),
      "rest",
    );
  });

  test("the buffer given to match() bounds the read", () => {
    const bytes = classified(ipv4(CLIENT4, VIP4, 17, udp(1, 2, [0xde, 0xad, 0xbe, 0xef])));
    assert.equal(m.flows[m.match(info, bytes)].name, "magic");
    assert.equal(m.flows[m.match(info, bytes.subarray(0, 30))].name, "rest");
  });
});

describe("FlowMatcher: ICMP errors follow the flow they quote", () => {
  const m = new FlowMatcher([
    f({
      name: "web80",
      target: "web",
      priority: 10,
      protocols: "tcp",
      dsts: `${VIP4},${VIP6}`,
      dports: "80",
    }),
    f({
      name: "tls",
      target: "tls",
      priority: 10,
      protocols: "tcp",
      dsts: `${VIP4},${VIP6}`,
      dports: "443",
    }),
    f({ name: "icmp", target: "other", priority: 0, dsts: `${VIP4},${VIP6}` }),
  ]);

  /** Router -> VIP: the reply VIP:vport -> client:cport could not be forwarded. */
  const error4 = (type: number, code: number, vport: number, cport: number) => {
    const quote = ipv4(VIP4, CLIENT4, 6, tcp(vport, cport).slice(0, 8), { total: 1500 });
    return ipv4("198.51.100.1", VIP4, 1, [type, code, 0, 0, 0, 0, ...be16(1400), ...quote]);
  };
  const error6 = (type: number, vport: number, cport: number) => {
    const quote = ipv6(VIP6, CLIENT6, 6, tcp(vport, cport), 1460);
    return ipv6("2001:db8:ff::1", VIP6, 58, [type, 0, 0, 0, ...be32(1280), ...quote]);
  };

  test("fragmentation needed about a port-80 flow: the port-80 flow", () => {
    assert.equal(matchName(m, error4(3, 4, 80, 40000)), "web80");
    assert.ok(info.icmpError);
    assert.equal(matchName(m, error4(3, 4, 443, 40000)), "tls");
    assert.equal(matchName(m, error4(11, 0, 80, 40000)), "web80");
  });

  test("packet too big (IPv6) about a port-80 flow: the port-80 flow", () => {
    assert.equal(matchName(m, error6(2, 80, 40000)), "web80");
    assert.equal(matchName(m, error6(1, 443, 40000)), "tls");
  });

  test("an error about a flow no flow covers goes where the quoted flow would", () => {
    assert.equal(matchName(m, error4(3, 4, 22, 40000)), "icmp");
  });

  test("byte matches read the quoted header as it was quoted", () => {
    const b = new FlowMatcher([
      f({ name: "from80", target: "x", priority: 1, protocols: "tcp", match: "tcp[0:2] = 80" }),
      f({ name: "far", target: "y", priority: 2, protocols: "tcp", match: "tcp[12:1] = 0x50" }),
      f({ name: "rest", target: "z", priority: 0 }),
    ]);
    // The quote holds the reply's first 8 bytes: source port 80; byte 12 is not there.
    assert.equal(matchName(b, error4(3, 4, 80, 40000)), "from80");
    assert.equal(matchName(b, error4(3, 4, 443, 40000)), "rest");
    // IPv6 quotes the whole header: byte 12 is present.
    assert.equal(matchName(b, error6(2, 443, 40000)), "far");
  });

  test("an error is never taken for echo, even with promiscuous ping", () => {
    const p = new FlowMatcher(m.flows, { promiscuousPing: true });
    assert.equal(matchName(p, error4(3, 4, 22, 40000)), "icmp");
  });
});

describe("FlowMatcher: ICMP echo", () => {
  const flows = [
    f({
      name: "web",
      target: "web",
      priority: 10,
      protocols: "tcp",
      dsts: `${VIP4},${VIP6}`,
      dports: "80",
      match: "tcp[13:1] & 0x02 = 0x02",
    }),
    f({
      name: "dns",
      target: "dns",
      priority: 5,
      protocols: "udp",
      dsts: "10.201.0.1",
      dports: "53",
    }),
    f({ name: "any", target: "any", priority: 1, dsts: "10.202.0.1" }),
  ];
  const echo4 = (dst: string, type = 8) => ipv4(CLIENT4, dst, 1, [type, 0, 0, 0, 0, 1, 0, 1]);
  const echo6 = (dst: string, type = 128) => ipv6(CLIENT6, dst, 58, [type, 0, 0, 0, 0, 1, 0, 1]);

  test("without promiscuous ping: only flows without protocols", () => {
    const m = new FlowMatcher(flows);
    assert.equal(matchName(m, echo4(VIP4)), null);
    assert.equal(matchName(m, echo4("10.201.0.1")), null);
    assert.equal(matchName(m, echo4("10.202.0.1")), "any");
    assert.equal(matchName(m, echo6(VIP6)), null);
  });

  test("with promiscuous ping: any flow whose addresses match", () => {
    const m = new FlowMatcher(flows, { promiscuousPing: true });
    assert.equal(matchName(m, echo4(VIP4)), "web");
    assert.equal(matchName(m, echo4(VIP4, 0)), "web"); // echo reply
    assert.equal(matchName(m, echo4("10.201.0.1")), "dns");
    assert.equal(matchName(m, echo4("10.202.0.1")), "any");
    assert.equal(matchName(m, echo4("10.203.0.1")), null);
    assert.equal(matchName(m, echo6(VIP6)), "web");
    assert.equal(matchName(m, echo6(VIP6, 129)), "web");
    // Other ICMP (timestamp, neighbour solicitation): not echo.
    assert.equal(matchName(m, echo4(VIP4, 13)), null);
    assert.equal(matchName(m, echo6(VIP6, 135)), null);
  });
});
