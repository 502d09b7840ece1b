// Packet classifier: IP packet bytes (as NFQUEUE delivers them, starting at the IP header,
// possibly a truncated copy or a GSO super-packet) -> flow key. Hot path: no allocation,
// no exceptions, no checksum checks; reads only the bytes the key needs.
import {
  type ClassifyOptions,
  FragKind,
  HashMode,
  InvalidReason,
  IpProto,
  layoutKey,
  type PacketInfo,
} from "./info.js";

// The whole packet API is reachable from this module (the data plane imports it from here).
export {
  addressHash,
  type ClassifyOptions,
  defaultClassifyOptions,
  encapPortMap,
  FragKind,
  flowHash,
  formatAddress,
  formatInfo,
  HashMode,
  InvalidReason,
  IpProto,
  infoFromTuple,
  invalidReasonNames,
  keyWordsFor,
  layoutKey,
  PacketInfo,
  protoName,
  protoNumber,
} from "./info.js";

/** IPv6 extension headers walked before giving up (6 is the most a legal packet needs). */
export const MAX_EXT_HEADERS = 8;

// Results of walkIpv6, in module state so that no result object is allocated per packet.
let walkProto = 0;
let walkOffset = 0;
let walkFragKind: FragKind = FragKind.None;
let walkFragId = 0;

/**
 * Classifies `len` bytes of `buf` starting at `offset`; fills `out`; returns out.invalid
 * (0 = ok). Never throws, never allocates.
 */
export function classify(
  buf: Uint8Array,
  offset: number,
  len: number,
  opts: ClassifyOptions,
  out: PacketInfo,
): number {
  out.family = 0;
  out.proto = 0;
  out.sport = 0;
  out.dport = 0;
  out.hashMode = HashMode.Addresses;
  out.fragKind = FragKind.None;
  out.fragId = 0;
  out.icmpError = false;
  out.icmpType = -1;
  out.icmpCode = -1;
  out.sctpEncap = false;
  out.l4Offset = -1;
  out.l4Length = 0;
  out.keyWords = 0;
  let r: number;
  // >>> 0 rejects negatives, fractions and NaN in one comparison each.
  if (offset >>> 0 !== offset || len >>> 0 !== len || offset + len > buf.length) {
    r = InvalidReason.BadBounds;
  } else if (len === 0) {
    r = InvalidReason.Truncated;
  } else {
    const version = buf[offset] >> 4;
    if (version === 4) r = parseIpv4(buf, offset, offset + len, opts, out);
    else if (version === 6) r = parseIpv6(buf, offset, offset + len, opts, out);
    else r = InvalidReason.BadVersion;
  }
  out.invalid = r as InvalidReason;
  if (r === 0) layoutKey(out);
  return r;
}

function parseIpv4(
  buf: Uint8Array,
  p: number,
  end: number,
  opts: ClassifyOptions,
  out: PacketInfo,
): number {
  if (end - p < 20) return InvalidReason.Truncated;
  const ihl = (buf[p] & 0x0f) << 2;
  if (ihl < 20) return InvalidReason.BadHeaderLength;
  if (end - p < ihl) return InvalidReason.Truncated;
  const total = (buf[p + 2] << 8) | buf[p + 3];
  // 0 = unknown (BIG TCP GSO packets > 64 KiB); larger than the bytes present = a
  // truncated copy or a GSO packet; smaller = link padding after the packet, cut it off.
  if (total !== 0) {
    if (total < ihl) return InvalidReason.BadTotalLength;
    if (p + total < end) end = p + total;
  }
  out.family = 4;
  const src = out.src;
  const dst = out.dst;
  src[0] = buf[p + 12];
  src[1] = buf[p + 13];
  src[2] = buf[p + 14];
  src[3] = buf[p + 15];
  dst[0] = buf[p + 16];
  dst[1] = buf[p + 17];
  dst[2] = buf[p + 18];
  dst[3] = buf[p + 19];
  const proto = buf[p + 9];
  out.proto = proto;
  // More-fragments flag and 13-bit offset; DF and the reserved bit do not matter.
  const frag = ((buf[p + 6] & 0x3f) << 8) | buf[p + 7];
  if (frag !== 0) {
    out.fragId = (buf[p + 4] << 8) | buf[p + 5];
    if ((frag & 0x1fff) !== 0) {
      out.fragKind = FragKind.Later;
      return 0; // no L4 header here: addresses only
    }
    out.fragKind = FragKind.First;
  }
  if (proto === IpProto.ICMP) return parseIcmp4(buf, p + ihl, end, opts, out);
  return parsePorts(buf, p + ihl, end, proto, opts, out, false, InvalidReason.Truncated);
}

function parseIpv6(
  buf: Uint8Array,
  p: number,
  end: number,
  opts: ClassifyOptions,
  out: PacketInfo,
): number {
  if (end - p < 40) return InvalidReason.Truncated;
  // Payload length 0 = jumbogram / BIG TCP: use the bytes present.
  const plen = (buf[p + 4] << 8) | buf[p + 5];
  if (plen !== 0 && p + 40 + plen < end) end = p + 40 + plen;
  out.family = 6;
  const src = out.src;
  const dst = out.dst;
  copy16(src, buf, p + 8);
  copy16(dst, buf, p + 24);
  const r = walkIpv6(buf, p, end);
  if (r !== 0) return r;
  const proto = walkProto;
  out.proto = proto;
  if (walkFragKind !== FragKind.None) {
    out.fragKind = walkFragKind;
    out.fragId = walkFragId;
    if (walkFragKind === FragKind.Later) return 0;
  }
  if (proto === IpProto.ICMPv6) return parseIcmp6(buf, walkOffset, end, opts, out);
  return parsePorts(buf, walkOffset, end, proto, opts, out, false, InvalidReason.Truncated);
}

/**
 * Walks the IPv6 extension headers of the packet at `p` (bounded by MAX_EXT_HEADERS).
 * On success sets walkProto (upper-layer protocol), walkOffset (its header), walkFragKind
 * and walkFragId. The same set of headers as the kernel's ipv6_ext_hdr(), so `th` in nft
 * and the ports here start at the same place.
 */
function walkIpv6(buf: Uint8Array, p: number, end: number): number {
  let nh = buf[p + 6];
  let q = p + 40;
  let count = 0;
  walkFragKind = FragKind.None;
  walkFragId = 0;
  let seenFrag = false;
  for (;;) {
    if (
      nh !== IpProto.HopByHop &&
      nh !== IpProto.Routing &&
      nh !== IpProto.DestOptions &&
      nh !== IpProto.Fragment &&
      nh !== IpProto.AH
    ) {
      break;
    }
    if (++count > MAX_EXT_HEADERS) return InvalidReason.TooManyExtensionHeaders;
    if (nh === IpProto.Fragment) {
      if (seenFrag) return InvalidReason.BadExtensionHeader;
      seenFrag = true;
      if (end - q < 8) return InvalidReason.Truncated;
      const next = buf[q];
      const offFlags = (buf[q + 2] << 8) | buf[q + 3];
      const id = ((buf[q + 4] << 24) | (buf[q + 5] << 16) | (buf[q + 6] << 8) | buf[q + 7]) >>> 0;
      if ((offFlags & 0xfff8) !== 0) {
        walkFragKind = FragKind.Later;
        walkFragId = id;
        walkProto = next;
        walkOffset = q + 8;
        return 0; // the rest is payload of the fragmented datagram
      }
      if ((offFlags & 1) !== 0) {
        walkFragKind = FragKind.First;
        walkFragId = id;
      }
      nh = next;
      q += 8;
      continue;
    }
    // Hop-by-hop is only valid right after the fixed header (RFC 8200 4.3).
    if (nh === IpProto.HopByHop && q !== p + 40) return InvalidReason.BadExtensionHeader;
    if (end - q < 2) return InvalidReason.Truncated;
    // AH counts its length in 4-byte units minus 2, the others in 8-byte units minus 1.
    const hlen = nh === IpProto.AH ? (buf[q + 1] + 2) << 2 : (buf[q + 1] + 1) << 3;
    if (end - q < hlen) return InvalidReason.Truncated;
    nh = buf[q];
    q += hlen;
  }
  walkProto = nh;
  walkOffset = q;
  return 0;
}

/**
 * Ports of TCP/UDP/SCTP at `q` (SCTP over UDP when a UDP port is the encapsulation port).
 * `swap` for an ICMP error's embedded packet: its destination is our source.
 * Other protocols: addresses only. Returns 0 or `trunc` when the ports are missing.
 * Sets l4Offset/l4Length to the header the ports came from.
 */
function parsePorts(
  buf: Uint8Array,
  q: number,
  end: number,
  proto: number,
  opts: ClassifyOptions,
  out: PacketInfo,
  swap: boolean,
  trunc: number,
): number {
  if (proto !== IpProto.TCP && proto !== IpProto.UDP && proto !== IpProto.SCTP) {
    out.hashMode = HashMode.Addresses;
    return 0;
  }
  if (end - q < 4) return trunc;
  let a = (buf[q] << 8) | buf[q + 1];
  let b = (buf[q + 2] << 8) | buf[q + 3];
  let mode: HashMode = HashMode.FiveTuple;
  let l4 = q;
  if (proto === IpProto.UDP) {
    // RFC 6951: the SCTP common header (ports first) follows the 8-byte UDP header.
    // Only the service's port says so: the destination, or the source of a quoted
    // packet (it went from the service back to the client). A client's source port that
    // happens to equal it says nothing.
    const service = swap ? a : b;
    const more = opts.sctpEncapPorts;
    if (
      (service === opts.sctpEncapPort && service !== 0) ||
      (more !== undefined && more[service] === 1)
    ) {
      if (end - q < 12) return trunc;
      a = (buf[q + 8] << 8) | buf[q + 9];
      b = (buf[q + 10] << 8) | buf[q + 11];
      l4 = q + 8;
      out.proto = IpProto.SCTP;
      out.sctpEncap = true;
      if (opts.sctpPortsOnly) mode = HashMode.Ports;
    }
  } else if (proto === IpProto.SCTP && opts.sctpPortsOnly) {
    mode = HashMode.Ports;
  }
  if (swap) {
    out.sport = b;
    out.dport = a;
  } else {
    out.sport = a;
    out.dport = b;
  }
  out.hashMode = mode;
  out.l4Offset = l4;
  out.l4Length = end - l4;
  return 0;
}

function parseIcmp4(
  buf: Uint8Array,
  q: number,
  end: number,
  opts: ClassifyOptions,
  out: PacketInfo,
): number {
  if (end - q < 1) return InvalidReason.Truncated;
  const type = buf[q];
  out.icmpType = type;
  if (end - q >= 2) out.icmpCode = buf[q + 1];
  // The error types that quote the offending datagram (the kernel's icmp_is_err()):
  // dest unreachable (incl. fragmentation needed), source quench, redirect,
  // time exceeded, parameter problem. Everything else (echo...) hashes on addresses.
  if (type !== 3 && type !== 4 && type !== 5 && type !== 11 && type !== 12) {
    out.hashMode = HashMode.Addresses;
    return 0;
  }
  if (end - q < 8) return InvalidReason.Truncated;
  out.icmpError = true;
  const ip = q + 8;
  // Version first: a quote of the wrong family is invalid however short it is.
  if (end - ip < 1) return InvalidReason.IcmpInnerTruncated;
  if (buf[ip] >> 4 !== 4) return InvalidReason.IcmpInnerInvalid;
  if (end - ip < 20) return InvalidReason.IcmpInnerTruncated;
  const ihl = (buf[ip] & 0x0f) << 2;
  if (ihl < 20) return InvalidReason.IcmpInnerInvalid;
  if (end - ip < ihl) return InvalidReason.IcmpInnerTruncated;
  // The quote is usually cut short, so its total length is mostly larger than what is
  // here; when it is smaller, what follows it is not part of it.
  const total = (buf[ip + 2] << 8) | buf[ip + 3];
  if (total >= ihl && ip + total < end) end = ip + total;
  // Swapped: the quoted packet went from the error's receiver to the quoted destination,
  // so the flow that reaches the receiver runs the other way.
  const src = out.src;
  const dst = out.dst;
  src[0] = buf[ip + 16];
  src[1] = buf[ip + 17];
  src[2] = buf[ip + 18];
  src[3] = buf[ip + 19];
  dst[0] = buf[ip + 12];
  dst[1] = buf[ip + 13];
  dst[2] = buf[ip + 14];
  dst[3] = buf[ip + 15];
  const proto = buf[ip + 9];
  out.proto = proto;
  if ((((buf[ip + 6] & 0x1f) << 8) | buf[ip + 7]) !== 0) {
    out.hashMode = HashMode.Addresses; // quotes a later fragment: no ports
    return 0;
  }
  return parsePorts(buf, ip + ihl, end, proto, opts, out, true, InvalidReason.IcmpInnerTruncated);
}

function parseIcmp6(
  buf: Uint8Array,
  q: number,
  end: number,
  opts: ClassifyOptions,
  out: PacketInfo,
): number {
  if (end - q < 1) return InvalidReason.Truncated;
  const type = buf[q];
  out.icmpType = type;
  if (end - q >= 2) out.icmpCode = buf[q + 1];
  // Errors that quote the packet (the kernel's icmpv6_is_err()): destination unreachable,
  // packet too big, time exceeded, parameter problem. Informational ones: addresses.
  if (type < 1 || type > 4) {
    out.hashMode = HashMode.Addresses;
    return 0;
  }
  if (end - q < 8) return InvalidReason.Truncated;
  out.icmpError = true;
  const ip = q + 8;
  if (end - ip < 1) return InvalidReason.IcmpInnerTruncated;
  if (buf[ip] >> 4 !== 6) return InvalidReason.IcmpInnerInvalid;
  if (end - ip < 40) return InvalidReason.IcmpInnerTruncated;
  const plen = (buf[ip + 4] << 8) | buf[ip + 5];
  if (plen !== 0 && ip + 40 + plen < end) end = ip + 40 + plen;
  const src = out.src;
  const dst = out.dst;
  copy16(src, buf, ip + 24);
  copy16(dst, buf, ip + 8);
  const r = walkIpv6(buf, ip, end);
  if (r !== 0) {
    return r === InvalidReason.Truncated
      ? InvalidReason.IcmpInnerTruncated
      : InvalidReason.IcmpInnerInvalid;
  }
  const proto = walkProto;
  out.proto = proto;
  if (walkFragKind === FragKind.Later) {
    out.hashMode = HashMode.Addresses;
    return 0;
  }
  return parsePorts(buf, walkOffset, end, proto, opts, out, true, InvalidReason.IcmpInnerTruncated);
}

/** Unrolled: measurably faster than a loop for the 16-byte IPv6 addresses. */
function copy16(d: Uint8Array, b: Uint8Array, o: number): void {
  d[0] = b[o];
  d[1] = b[o + 1];
  d[2] = b[o + 2];
  d[3] = b[o + 3];
  d[4] = b[o + 4];
  d[5] = b[o + 5];
  d[6] = b[o + 6];
  d[7] = b[o + 7];
  d[8] = b[o + 8];
  d[9] = b[o + 9];
  d[10] = b[o + 10];
  d[11] = b[o + 11];
  d[12] = b[o + 12];
  d[13] = b[o + 13];
  d[14] = b[o + 14];
  d[15] = b[o + 15];
}
