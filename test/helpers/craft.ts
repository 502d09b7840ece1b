// Packets as bytes for tests that inject traffic (e.g. through a TUN device): IPv4 and
// IPv6 headers with correct checksums, UDP with its pseudo-header checksum, SCTP common
// header + chunks with CRC32c (RFC 9260; the kernel does not check it when forwarding,
// but a real stack at the far end would). Pure: no I/O.
import ipaddr from "ipaddr.js";

export const PROTO_UDP = 17;
export const PROTO_SCTP = 132;

/** Address text -> 4 or 16 bytes. */
export function addressBytes(text: string): Uint8Array {
  return Uint8Array.from(ipaddr.parse(text).toByteArray());
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One's complement sum of 16-bit big-endian words, not yet folded or inverted. */
function sum16(b: Uint8Array, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i] << 8) | b[i + 1];
  if (b.length % 2 === 1) s += b[b.length - 1] << 8;
  return s;
}

/** The Internet checksum (RFC 1071) of `b`, with `initial` (e.g. a pseudo-header sum) added. */
export function internetChecksum(b: Uint8Array, initial = 0): number {
  let s = sum16(b, initial);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as SCTP and iSCSI use it. */
export function crc32c(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC32C_TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A chunk: type, flags, length (without padding), value, padded to 4 bytes. */
export function sctpChunk(type: number, flags: number, value: Uint8Array): Uint8Array {
  const len = 4 + value.length;
  const c = new Uint8Array((len + 3) & ~3);
  const v = new DataView(c.buffer);
  v.setUint8(0, type);
  v.setUint8(1, flags);
  v.setUint16(2, len);
  c.set(value, 4);
  return c;
}

/** A TLV parameter (INIT parameters, heartbeat info), padded to 4 bytes. */
function sctpParam(type: number, value: Uint8Array): Uint8Array {
  const len = 4 + value.length;
  const p = new Uint8Array((len + 3) & ~3);
  const v = new DataView(p.buffer);
  v.setUint16(0, type);
  v.setUint16(2, len);
  p.set(value, 4);
  return p;
}

export interface InitOptions {
  initiateTag: number;
  initialTsn: number;
  aRwnd?: number;
  outStreams?: number;
  inStreams?: number;
  /** IPv4/IPv6 address parameters: the endpoint's other addresses (multihoming). */
  addresses?: readonly string[];
}

/** INIT (type 1). Send it with verification tag 0. */
export function initChunk(o: InitOptions): Uint8Array {
  const fixed = new Uint8Array(16);
  const v = new DataView(fixed.buffer);
  v.setUint32(0, o.initiateTag);
  v.setUint32(4, o.aRwnd ?? 65536);
  v.setUint16(8, o.outStreams ?? 10);
  v.setUint16(10, o.inStreams ?? 10);
  v.setUint32(12, o.initialTsn);
  const params = (o.addresses ?? []).map((a) => {
    const bytes = addressBytes(a);
    return sctpParam(bytes.length === 4 ? 5 : 6, bytes);
  });
  return sctpChunk(1, 0, concat([fixed, ...params]));
}

export interface DataOptions {
  tsn: number;
  stream?: number;
  ssn?: number;
  ppid?: number;
  data: Uint8Array;
}

/** DATA (type 0), a whole message (flags B|E). */
export function dataChunk(o: DataOptions): Uint8Array {
  const fixed = new Uint8Array(12);
  const v = new DataView(fixed.buffer);
  v.setUint32(0, o.tsn);
  v.setUint16(4, o.stream ?? 0);
  v.setUint16(6, o.ssn ?? 0);
  v.setUint32(8, o.ppid ?? 0);
  return sctpChunk(0, 0x03, concat([fixed, o.data]));
}

/** HEARTBEAT (type 4) with one Heartbeat Info parameter (type 1). */
export function heartbeatChunk(info: Uint8Array): Uint8Array {
  return sctpChunk(4, 0, sctpParam(1, info));
}

export interface SctpOptions {
  sport: number;
  dport: number;
  /** Verification tag: 0 for a packet carrying INIT, the peer's Initiate Tag otherwise. */
  vtag: number;
  chunks: readonly Uint8Array[];
}

/** SCTP common header + chunks, CRC32c in the checksum field (stored little-endian). */
export function sctpPacket(o: SctpOptions): Uint8Array {
  const p = concat([new Uint8Array(12), ...o.chunks]);
  const v = new DataView(p.buffer);
  v.setUint16(0, o.sport);
  v.setUint16(2, o.dport);
  v.setUint32(4, o.vtag);
  // RFC 9260 appendix A: the CRC's least significant byte goes first on the wire.
  v.setUint32(8, crc32c(p), true);
  return p;
}

/** Sum of the IPv4/IPv6 pseudo-header for an upper-layer checksum. */
function pseudoHeaderSum(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  let s = sum16(src) + sum16(dst) + proto;
  s += src.length === 4 ? len : Math.floor(len / 0x10000) + (len & 0xffff);
  return s;
}

/** UDP header + payload with the checksum over the pseudo-header of `src` -> `dst`. */
export function udpDatagram(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Uint8Array,
): Uint8Array {
  const d = concat([new Uint8Array(8), payload]);
  const v = new DataView(d.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint16(4, d.length);
  const sum = internetChecksum(
    d,
    pseudoHeaderSum(addressBytes(src), addressBytes(dst), PROTO_UDP, d.length),
  );
  // 0 means "no checksum" (and is not allowed over IPv6): the same value in one's complement.
  v.setUint16(6, sum === 0 ? 0xffff : sum);
  return d;
}

export interface IpOptions {
  ttl?: number;
  /** IPv4 identification. */
  id?: number;
  /** IPv6 flow label. */
  flowLabel?: number;
}

/** An IPv4 (20-byte header, DF) or IPv6 (no extension headers) packet, by the address family. */
export function ipPacket(
  src: string,
  dst: string,
  proto: number,
  payload: Uint8Array,
  o: IpOptions = {},
): Uint8Array {
  const s = addressBytes(src);
  const d = addressBytes(dst);
  if (s.length !== d.length) throw new Error(`mixed address families: ${src} and ${dst}`);
  if (s.length === 4) {
    const p = new Uint8Array(20 + payload.length);
    const v = new DataView(p.buffer);
    v.setUint8(0, 0x45);
    v.setUint16(2, p.length);
    v.setUint16(4, o.id ?? 0);
    v.setUint16(6, 0x4000);
    v.setUint8(8, o.ttl ?? 64);
    v.setUint8(9, proto);
    p.set(s, 12);
    p.set(d, 16);
    v.setUint16(10, internetChecksum(p.subarray(0, 20)));
    p.set(payload, 20);
    return p;
  }
  const p = new Uint8Array(40 + payload.length);
  const v = new DataView(p.buffer);
  v.setUint32(0, (0x6 << 28) | ((o.flowLabel ?? 0) & 0xfffff));
  v.setUint16(4, payload.length);
  v.setUint8(6, proto);
  v.setUint8(7, o.ttl ?? 64);
  p.set(s, 8);
  p.set(d, 24);
  p.set(payload, 40);
  return p;
}

/** SCTP directly in IP. */
export function sctpInIp(
  src: string,
  dst: string,
  sctp: SctpOptions,
  ip: IpOptions = {},
): Uint8Array {
  return ipPacket(src, dst, PROTO_SCTP, sctpPacket(sctp), ip);
}

/** SCTP over UDP (RFC 6951): UDP `udpSport` -> `udpDport`, payload the SCTP packet. */
export function sctpInUdp(
  src: string,
  dst: string,
  udpSport: number,
  udpDport: number,
  sctp: SctpOptions,
  ip: IpOptions = {},
): Uint8Array {
  return ipPacket(
    src,
    dst,
    PROTO_UDP,
    udpDatagram(src, dst, udpSport, udpDport, sctpPacket(sctp)),
    ip,
  );
}

export const PROTO_TCP = 6;
export const PROTO_ICMP = 1;
export const PROTO_ICMPV6 = 58;

/** A 20-byte TCP header (no options, checksum 0: nflb never checks it), flags SYN by default. */
export function tcpSegment(
  sport: number,
  dport: number,
  flags = 0x02,
  payload = new Uint8Array(0),
): Uint8Array {
  const s = concat([new Uint8Array(20), payload]);
  const v = new DataView(s.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint32(4, 1);
  v.setUint8(12, 5 << 4);
  v.setUint8(13, flags);
  v.setUint16(14, 65535);
  return s;
}

/**
 * An ICMP (IPv4) or ICMPv6 message: type, code, 4 bytes of type-specific data (zero, or
 * `rest`), then `body` (an error quotes the offending packet there). Checksum 0.
 */
export function icmpMessage(type: number, code: number, body: Uint8Array, rest = 0): Uint8Array {
  const m = concat([new Uint8Array(8), body]);
  const v = new DataView(m.buffer);
  v.setUint8(0, type);
  v.setUint8(1, code);
  v.setUint32(4, rest);
  return m;
}
