// The classifier's result type, the flow-key layout and everything built on it
// (hash, textual tuples, formatting). Pure: no I/O.
import ipaddr from "ipaddr.js";
import { jhashWords } from "../hash/jhash.js";

// Plain const objects rather than `const enum`: they survive isolatedModules/transpilers,
// exist at run time (names for traces, range checks in tests) and cost the same in V8.

/** Which fields the flow key, and so the hash, is built from. */
export const HashMode = {
  /** saddr . daddr . sport . dport (nft `jhash ip saddr . ip daddr . th sport . th dport`). */
  FiveTuple: 0,
  /** saddr . daddr (nft `jhash ip saddr . ip daddr`): protocols without ports, later fragments. */
  Addresses: 1,
  /** sport . dport (nft `jhash th sport . th dport`): SCTP, whose addresses change (multihoming). */
  Ports: 2,
} as const;
export type HashMode = (typeof HashMode)[keyof typeof HashMode];

/** Where the packet sits in a fragmented datagram. */
export const FragKind = {
  /** Not fragmented (IPv6 atomic fragments, RFC 6946, count as not fragmented). */
  None: 0,
  /** Offset 0 with more-fragments set: carries the L4 header, so the ports. */
  First: 1,
  /** Offset > 0: no L4 header, keyed on addresses; `fragId` finds the first fragment's choice. */
  Later: 2,
} as const;
export type FragKind = (typeof FragKind)[keyof typeof FragKind];

/** Why a packet could not be classified. 0 means it could. */
export const InvalidReason = {
  None: 0,
  /** The bytes end (buffer or the packet's own length field) before a field the key needs. */
  Truncated: 1,
  /** The IP version nibble is neither 4 nor 6. */
  BadVersion: 2,
  /** IPv4 IHL below 5 words. */
  BadHeaderLength: 3,
  /** IPv6 extension header out of place: hop-by-hop not first, or a second fragment header. */
  BadExtensionHeader: 4,
  /** More than MAX_EXT_HEADERS IPv6 extension headers (bounds the walk). */
  TooManyExtensionHeaders: 5,
  /** IPv4 total length non-zero but shorter than the header (0 is allowed: BIG TCP). */
  BadTotalLength: 6,
  /** ICMP error whose embedded packet ends before its IP header or its ports. */
  IcmpInnerTruncated: 7,
  /** ICMP error whose embedded packet is not a well-formed packet of the same family. */
  IcmpInnerInvalid: 8,
  /** offset/len are not integers inside the buffer (a caller bug; reported, not thrown). */
  BadBounds: 9,
} as const;
export type InvalidReason = (typeof InvalidReason)[keyof typeof InvalidReason];

/** Names for traces and counters, indexed by InvalidReason. */
export const invalidReasonNames: readonly string[] = [
  "none",
  "truncated",
  "bad-version",
  "bad-header-length",
  "bad-extension-header",
  "too-many-extension-headers",
  "bad-total-length",
  "icmp-inner-truncated",
  "icmp-inner-invalid",
  "bad-bounds",
];

/** IP protocol numbers the classifier cares about. */
export const IpProto = {
  HopByHop: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  Routing: 43,
  Fragment: 44,
  ESP: 50,
  AH: 51,
  ICMPv6: 58,
  NoNext: 59,
  DestOptions: 60,
  SCTP: 132,
} as const;

export interface ClassifyOptions {
  /** Hash SCTP (native or UDP-encapsulated) on ports only. Default true. */
  readonly sctpPortsOnly: boolean;
  /** UDP port of SCTP over UDP (RFC 6951), the service's port: the destination of traffic to it; 0 = off. */
  readonly sctpEncapPort: number;
  /**
   * More such ports (flows' --udpencap): 65536 bytes, 1 where UDP to that port is SCTP
   * over UDP. Absent = only sctpEncapPort.
   */
  readonly sctpEncapPorts?: Uint8Array;
}

/** The bitmap of ClassifyOptions.sctpEncapPorts for `ports`; undefined when there are none. */
export function encapPortMap(ports: ArrayLike<number>): Uint8Array | undefined {
  if (ports.length === 0) return undefined;
  const map = new Uint8Array(65536);
  for (let i = 0; i < ports.length; i++) map[ports[i]] = 1;
  return map;
}

export const defaultClassifyOptions: ClassifyOptions = { sctpPortsOnly: true, sctpEncapPort: 0 };

/** Key words per (hash mode, family): nft pads every concatenated field to 4 bytes. */
export function keyWordsFor(mode: HashMode, family: 4 | 6): number {
  if (mode === HashMode.Ports) return 2;
  if (mode === HashMode.Addresses) return family === 4 ? 2 : 8;
  return family === 4 ? 4 : 10;
}

/**
 * The classifier's result, reused for every packet (allocate one per worker).
 * Fields other than `invalid` are meaningful only when `invalid` is 0.
 * For an ICMP error, addresses, ports and `proto` describe the embedded packet's flow,
 * swapped, i.e. the flow in the direction that reaches the error's receiver.
 */
export class PacketInfo {
  family: 4 | 6 | 0 = 0;
  /** Protocol the key describes: the embedded one for ICMP errors, 132 for SCTP over UDP. */
  proto = 0;
  sport = 0;
  dport = 0;
  hashMode: HashMode = HashMode.Addresses;
  fragKind: FragKind = FragKind.None;
  /** IPv4: 16-bit identification; IPv6: 32-bit fragment header identification. */
  fragId = 0;
  /** The packet is an ICMP/ICMPv6 error; the key comes from the embedded packet. */
  icmpError = false;
  /** ICMP(v6) type and code of the outer ICMP header, -1 when there is none. */
  icmpType = -1;
  icmpCode = -1;
  /** The ports are those of SCTP carried in UDP (RFC 6951). */
  sctpEncap = false;
  /**
   * Offset in the classified buffer of the L4 header the key's ports came from (the
   * quoted one for an ICMP error, the inner SCTP header for SCTP over UDP), -1 when the
   * key has no ports. Flow byte matches (`tcp[13:1] & 0x02 = 0x02`) read from here.
   */
  l4Offset = -1;
  /** Bytes of that header (and what follows it in the packet) present in the buffer. */
  l4Length = 0;
  invalid: InvalidReason = InvalidReason.None;
  /** Source address; IPv4 uses bytes 0..3 (the rest may hold an earlier IPv6 packet's). */
  readonly src = new Uint8Array(16);
  readonly dst = new Uint8Array(16);
  /** Word views of src/dst: the key is assembled by copying words, not bytes. */
  readonly src32 = new Uint32Array(this.src.buffer);
  readonly dst32 = new Uint32Array(this.dst.buffer);
  /** jhash key in nft concatenation layout; `keyBytes` views the same memory. */
  readonly key = new Uint32Array(10);
  readonly keyBytes = new Uint8Array(this.key.buffer);
  keyWords = 0;
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** A port as the key word nft stores: 2 bytes big-endian, then 2 zero bytes, in memory. */
function portWord(port: number): number {
  return LITTLE_ENDIAN ? ((port >> 8) & 0xff) | ((port & 0xff) << 8) : (port << 16) >>> 0;
}

/**
 * Writes out.key from family, hash mode, addresses and ports, as nft lays out the
 * concatenation in its registers: each field padded to 4 bytes, ports big-endian
 * followed by two zero bytes. Addresses are copied as native words over their bytes and
 * jhash reads native-endian words, as the kernel does, so this matches on either byte order.
 */
export function layoutKey(out: PacketInfo): void {
  const k = out.key;
  const mode = out.hashMode;
  if (mode === HashMode.Ports) {
    k[0] = portWord(out.sport);
    k[1] = portWord(out.dport);
    out.keyWords = 2;
    return;
  }
  const s = out.src32;
  const d = out.dst32;
  let n: number;
  if (out.family === 4) {
    k[0] = s[0];
    k[1] = d[0];
    n = 2;
  } else {
    k[0] = s[0];
    k[1] = s[1];
    k[2] = s[2];
    k[3] = s[3];
    k[4] = d[0];
    k[5] = d[1];
    k[6] = d[2];
    k[7] = d[3];
    n = 8;
  }
  if (mode === HashMode.FiveTuple) {
    k[n] = portWord(out.sport);
    k[n + 1] = portWord(out.dport);
    n += 2;
  }
  out.keyWords = n;
}

/** The kernel's jhash of the key (per hash mode) with `seed`; index with reciprocalScale. */
export function flowHash(info: PacketInfo, seed: number): number {
  return jhashWords(info.key, info.keyWords, seed);
}

const addressScratch = new Uint32Array(8);

/**
 * The kernel's jhash of the addresses alone (`jhash ip saddr . ip daddr`), whatever the
 * hash mode: every fragment of a datagram has them, so the load-balancer tier places
 * fragments by this hash.
 */
export function addressHash(info: PacketInfo, seed: number): number {
  const words = info.family === 4 ? 2 : 8;
  // The key starts with the addresses unless it is a ports-only key.
  if (info.hashMode !== HashMode.Ports) return jhashWords(info.key, words, seed);
  const half = words / 2;
  for (let i = 0; i < half; i++) {
    addressScratch[i] = info.src32[i];
    addressScratch[half + i] = info.dst32[i];
  }
  return jhashWords(addressScratch, words, seed);
}

const protoNames: Record<string, number> = {
  icmp: 1,
  tcp: 6,
  udp: 17,
  icmpv6: 58,
  "ipv6-icmp": 58,
  sctp: 132,
};

/** Protocol name ("tcp", "udp", "sctp", "icmp", "icmpv6") or decimal number -> number. */
export function protoNumber(name: string): number {
  const key = name.trim().toLowerCase();
  const known = protoNames[key];
  if (known !== undefined) return known;
  if (/^\d+$/.test(key) && Number(key) <= 255) return Number(key);
  throw new Error(`unknown protocol "${name}"`);
}

export function protoName(proto: number): string {
  switch (proto) {
    case IpProto.ICMP:
      return "icmp";
    case IpProto.TCP:
      return "tcp";
    case IpProto.UDP:
      return "udp";
    case IpProto.ICMPv6:
      return "icmpv6";
    case IpProto.SCTP:
      return "sctp";
    default:
      return `proto ${proto}`;
  }
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`${what} ${port} is not a port number (0..65535)`);
  }
}

/**
 * Builds a PacketInfo from a textual 5-tuple (the `nflb fwmark` command), through the same
 * key layout as the classifier. Hash mode follows the protocol as in classify(): TCP/UDP
 * 5-tuple, SCTP ports-only (per opts), anything else addresses only (ports ignored).
 * A UDP tuple is taken as plain UDP even on the SCTP encapsulation port: the inner SCTP
 * ports are not part of the tuple. Throws on a bad address/port or mixed families.
 */
export function infoFromTuple(
  proto: number | string,
  src: string,
  sport: number,
  dst: string,
  dport: number,
  opts: ClassifyOptions,
  out: PacketInfo,
): void {
  const p = typeof proto === "number" ? proto : protoNumber(proto);
  if (!Number.isInteger(p) || p < 0 || p > 255) throw new Error(`bad protocol ${proto}`);
  const s = ipaddr.parse(src.trim());
  const d = ipaddr.parse(dst.trim());
  if (s.kind() !== d.kind()) throw new Error(`mixed address families: ${src} and ${dst}`);
  const family = s.kind() === "ipv4" ? 4 : 6;
  let mode: HashMode = HashMode.Addresses;
  if (p === IpProto.TCP || p === IpProto.UDP) mode = HashMode.FiveTuple;
  else if (p === IpProto.SCTP) mode = opts.sctpPortsOnly ? HashMode.Ports : HashMode.FiveTuple;
  if (mode !== HashMode.Addresses) {
    checkPort(sport, "source port");
    checkPort(dport, "destination port");
  }
  out.family = family;
  out.proto = p;
  out.sport = mode === HashMode.Addresses ? 0 : sport;
  out.dport = mode === HashMode.Addresses ? 0 : dport;
  out.hashMode = mode;
  out.fragKind = FragKind.None;
  out.fragId = 0;
  out.icmpError = false;
  out.icmpType = -1;
  out.icmpCode = -1;
  out.sctpEncap = false;
  out.l4Offset = -1;
  out.l4Length = 0;
  out.invalid = InvalidReason.None;
  out.src.fill(0);
  out.dst.fill(0);
  out.src.set(s.toByteArray());
  out.dst.set(d.toByteArray());
  layoutKey(out);
}

/** Textual address of `bytes` for the family (IPv6 in RFC 5952 form). */
export function formatAddress(family: 4 | 6 | 0, bytes: Uint8Array): string {
  if (family === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  return ipaddr.fromByteArray(Array.from(bytes.subarray(0, 16))).toString();
}

const modeNames = ["5-tuple", "addresses", "ports"];
const fragNames = ["none", "first", "later"];

/** "tcp 10.0.0.1:1234 -> 10.0.0.2:80 (hash 5-tuple)", for traces and the CLI. */
export function formatInfo(info: PacketInfo): string {
  if (info.invalid !== InvalidReason.None) {
    return `invalid packet (${invalidReasonNames[info.invalid] ?? info.invalid})`;
  }
  const family = info.family;
  const v6 = family === 6;
  const src = formatAddress(family, info.src);
  const dst = formatAddress(family, info.dst);
  let text: string;
  if (info.hashMode === HashMode.Addresses) {
    text = `${protoName(info.proto)} ${src} -> ${dst}`;
  } else {
    const s = v6 ? `[${src}]` : src;
    const d = v6 ? `[${dst}]` : dst;
    text = `${protoName(info.proto)} ${s}:${info.sport} -> ${d}:${info.dport}`;
  }
  let notes = `hash ${modeNames[info.hashMode]}`;
  if (info.icmpError) {
    notes += `, ${v6 ? "icmpv6" : "icmp"} error type ${info.icmpType} code ${info.icmpCode}`;
  }
  if (info.sctpEncap) notes += ", sctp over udp";
  if (info.fragKind !== FragKind.None) {
    notes += `, fragment ${fragNames[info.fragKind]} id 0x${info.fragId.toString(16)}`;
  }
  return `${text} (${notes})`;
}
