// nfnetlink_queue messages, pure: builders write into a caller's buffer, the packet
// decoder fills preallocated typed arrays with offsets into the receive buffer (no copy,
// no allocation per packet). Malformed input is counted and skipped, never thrown.
import {
  NFGENMSG_LEN,
  NFQ_TYPE_CONFIG,
  NFQ_TYPE_PACKET,
  NFQ_TYPE_VERDICT,
  NFQA_CAP_LEN,
  NFQA_CFG_CMD,
  NFQA_CFG_FLAGS,
  NFQA_CFG_MASK,
  NFQA_CFG_PARAMS,
  NFQA_CFG_QUEUE_MAXLEN,
  NFQA_IFINDEX_INDEV,
  NFQA_IFINDEX_OUTDEV,
  NFQA_MARK,
  NFQA_PACKET_HDR,
  NFQA_PAYLOAD,
  NFQA_SKB_INFO,
  NFQA_VERDICT_HDR,
  NLA_HDRLEN,
  NLA_TYPE_MASK,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  VERDICT_LEN,
  VERDICT_MARK_LEN,
} from "./constants.js";

/** Netlink headers are in host byte order. */
export const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** A DataView whose offsets equal the Uint8Array's indices. */
export function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function putNlmsghdr(
  v: DataView,
  off: number,
  len: number,
  type: number,
  flags: number,
  seq: number,
): void {
  v.setUint32(off, len, HOST_LE);
  v.setUint16(off + 4, type, HOST_LE);
  v.setUint16(off + 6, flags, HOST_LE);
  v.setUint32(off + 8, seq, HOST_LE);
  v.setUint32(off + 12, 0, HOST_LE); // pid 0: the kernel fills in our port id
}

function putNfgenmsg(v: DataView, off: number, queue: number): void {
  v.setUint8(off, 0); // AF_UNSPEC: queue messages are not per family any more
  v.setUint8(off + 1, 0); // NFNETLINK_V0
  v.setUint16(off + 2, queue, false); // res_id: queue number, big-endian
}

function putAttrU32(v: DataView, off: number, type: number, value: number): number {
  v.setUint16(off, NLA_HDRLEN + 4, HOST_LE);
  v.setUint16(off + 2, type, HOST_LE);
  v.setUint32(off + 4, value, false);
  return off + 8;
}

export interface QueueConfig {
  /** NFQNL_CFG_CMD_BIND / NFQNL_CFG_CMD_UNBIND; omitted: no command attribute. */
  command?: number;
  /** Both or neither: NFQA_CFG_PARAMS. */
  copyMode?: number;
  copyRange?: number;
  maxLen?: number;
  /** NFQA_CFG_FLAGS and NFQA_CFG_MASK go together (the kernel rejects flags without mask). */
  flags?: number;
  mask?: number;
}

/**
 * Writes one NFQNL_MSG_CONFIG message for `queue` at `off`; returns the offset after it.
 * With ack (default) the kernel answers with an NLMSG_ERROR carrying `seq`.
 */
export function encodeConfig(
  v: DataView,
  off: number,
  queue: number,
  cfg: QueueConfig,
  seq: number,
  ack = true,
): number {
  let p = off + NLMSG_HDRLEN;
  putNfgenmsg(v, p, queue);
  p += NFGENMSG_LEN;
  if (cfg.command !== undefined) {
    v.setUint16(p, NLA_HDRLEN + 4, HOST_LE);
    v.setUint16(p + 2, NFQA_CFG_CMD, HOST_LE);
    v.setUint8(p + 4, cfg.command);
    v.setUint8(p + 5, 0);
    v.setUint16(p + 6, 0, false); // pf: ignored by kernels since 3.8
    p += 8;
  }
  if (cfg.copyMode !== undefined || cfg.copyRange !== undefined) {
    // struct nfqnl_msg_config_params is packed: 5 bytes, padded to 8 after the header
    v.setUint16(p, NLA_HDRLEN + 5, HOST_LE);
    v.setUint16(p + 2, NFQA_CFG_PARAMS, HOST_LE);
    v.setUint32(p + 4, cfg.copyRange ?? 0, false);
    v.setUint8(p + 8, cfg.copyMode ?? 0);
    v.setUint8(p + 9, 0);
    v.setUint16(p + 10, 0);
    p += 12;
  }
  if (cfg.maxLen !== undefined) p = putAttrU32(v, p, NFQA_CFG_QUEUE_MAXLEN, cfg.maxLen);
  if (cfg.flags !== undefined || cfg.mask !== undefined) {
    p = putAttrU32(v, p, NFQA_CFG_FLAGS, cfg.flags ?? 0);
    p = putAttrU32(v, p, NFQA_CFG_MASK, cfg.mask ?? cfg.flags ?? 0);
  }
  putNlmsghdr(v, off, p - off, NFQ_TYPE_CONFIG, NLM_F_REQUEST | (ack ? NLM_F_ACK : 0), seq);
  return p;
}

/**
 * Writes one NFQNL_MSG_VERDICT at `off`; returns the offset after it (off + 32, or
 * off + 40 with a mark). mark < 0 leaves the packet's mark unchanged.
 */
export function encodeVerdict(
  v: DataView,
  off: number,
  queue: number,
  id: number,
  verdict: number,
  mark: number,
): number {
  const len = mark < 0 ? VERDICT_LEN : VERDICT_MARK_LEN;
  putNlmsghdr(v, off, len, NFQ_TYPE_VERDICT, NLM_F_REQUEST, 0);
  putNfgenmsg(v, off + NLMSG_HDRLEN, queue);
  const a = off + NLMSG_HDRLEN + NFGENMSG_LEN;
  v.setUint16(a, NLA_HDRLEN + 8, HOST_LE);
  v.setUint16(a + 2, NFQA_VERDICT_HDR, HOST_LE);
  v.setUint32(a + 4, verdict, false);
  v.setUint32(a + 8, id, false);
  if (mark >= 0) putAttrU32(v, a + 12, NFQA_MARK, mark);
  return off + len;
}

/**
 * Length (nlmsg_len) of the message at `off` when it is well formed within `end`,
 * else -1. A datagram holds messages at 4-byte aligned offsets.
 */
export function messageLength(v: DataView, off: number, end: number): number {
  if (off + NLMSG_HDRLEN > end) return -1;
  const len = v.getUint32(off, HOST_LE);
  if (len < NLMSG_HDRLEN || off + len > end) return -1;
  return len;
}

export function messageType(v: DataView, off: number): number {
  return v.getUint16(off + 4, HOST_LE);
}

export interface NetlinkAck {
  /** 0 for an ACK, else -errno. */
  error: number;
  /** Sequence number of the request it answers. */
  seq: number;
  /** nlmsg_type of the request it answers. */
  requestType: number;
}

/** Decodes an NLMSG_ERROR message (ACK when error is 0); null when it is not one. */
export function parseAck(v: DataView, off: number, len: number): NetlinkAck | null {
  if (len < NLMSG_HDRLEN + 4 || messageType(v, off) !== NLMSG_ERROR) return null;
  const error = v.getInt32(off + NLMSG_HDRLEN, HOST_LE);
  // struct nlmsgerr: int error; struct nlmsghdr msg (at least its header is echoed)
  if (len < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN) return { error, seq: -1, requestType: -1 };
  const req = off + NLMSG_HDRLEN + 4;
  return {
    error,
    seq: v.getUint32(req + 8, HOST_LE),
    requestType: v.getUint16(req + 4, HOST_LE),
  };
}

/** Per-packet fields of one batch, as parallel typed arrays reused for every batch. */
export class PacketArrays {
  count = 0;
  readonly ids: Uint32Array;
  /** Offset of the packet's first byte (its IP header) in the receive buffer. */
  readonly payloadOffset: Int32Array;
  /** Bytes present (at most the copy range); 0 when the message had no payload. */
  readonly payloadLength: Int32Array;
  /** Length of the whole packet (NFQA_CAP_LEN when the copy was cut, else payloadLength). */
  readonly origLength: Int32Array;
  /** NFQA_MARK; 0 when absent (the kernel omits a zero mark). */
  readonly marks: Uint32Array;
  /** Ethertype, host order (0x0800, 0x86dd); 0 when unknown. */
  readonly hwProtocol: Uint16Array;
  /** Netfilter hook (NF_INET_PRE_ROUTING = 0 ...). */
  readonly hooks: Uint8Array;
  /** nfgenmsg family (NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10, NFPROTO_BRIDGE = 7). */
  readonly family: Uint8Array;
  readonly inIfindex: Uint32Array;
  readonly outIfindex: Uint32Array;
  /** NFQA_SKB_INFO flags (NFQA_SKB_GSO, NFQA_SKB_CSUMNOTREADY, ...); 0 when absent. */
  readonly skbInfo: Uint32Array;

  /**
   * @param buf the receive buffer the payload offsets point into (PacketBatch.buf).
   */
  constructor(
    readonly capacity: number,
    readonly buf: Uint8Array = new Uint8Array(0),
  ) {
    this.ids = new Uint32Array(capacity);
    this.payloadOffset = new Int32Array(capacity);
    this.payloadLength = new Int32Array(capacity);
    this.origLength = new Int32Array(capacity);
    this.marks = new Uint32Array(capacity);
    this.hwProtocol = new Uint16Array(capacity);
    this.hooks = new Uint8Array(capacity);
    this.family = new Uint8Array(capacity);
    this.inIfindex = new Uint32Array(capacity);
    this.outIfindex = new Uint32Array(capacity);
    this.skbInfo = new Uint32Array(capacity);
  }
}

export interface DecodeCounters {
  /** Messages (or whole datagram tails) that could not be parsed. */
  malformed: number;
  /** NLMSG_ERROR messages with a non-zero error (e.g. a verdict for an unknown id). */
  errorAcks: number;
  /** The last such error (-errno). */
  lastError: number;
  /** Well-formed messages of other types (ACKs, NOOP, ...). */
  other: number;
}

export function newDecodeCounters(): DecodeCounters {
  return { malformed: 0, errorAcks: 0, lastError: 0, other: 0 };
}

/**
 * Decodes the netlink messages in v[start, end) (one received datagram, or its rest)
 * into `out` from index out.count on. Returns the offset at which it stopped: `end`
 * when everything was consumed, or the offset of the next unread message when `out` is
 * full (decode again from there after handling the batch).
 * `truncated`: the datagram was cut by the receive slot; a packet whose payload runs
 * past `end` is still emitted (payload clamped) so it can get a verdict.
 */
export function decodeMessages(
  v: DataView,
  start: number,
  end: number,
  out: PacketArrays,
  counters: DecodeCounters,
  truncated = false,
): number {
  let off = start;
  while (off < end) {
    if (out.count >= out.capacity) return off;
    if (off + NLMSG_HDRLEN > end) {
      counters.malformed++;
      return end;
    }
    const declared = v.getUint32(off, HOST_LE);
    if (declared < NLMSG_HDRLEN || (off + declared > end && !truncated)) {
      counters.malformed++;
      return end;
    }
    const msgEnd = Math.min(off + declared, end);
    const type = v.getUint16(off + 4, HOST_LE);
    if (type === NFQ_TYPE_PACKET) {
      decodePacket(v, off, msgEnd, out, counters, msgEnd < off + declared);
    } else if (type === NLMSG_ERROR && msgEnd - off >= NLMSG_HDRLEN + 4) {
      const error = v.getInt32(off + NLMSG_HDRLEN, HOST_LE);
      if (error !== 0) {
        counters.errorAcks++;
        counters.lastError = error;
      } else counters.other++;
    } else counters.other++;
    off += align4(declared);
  }
  return end;
}

function decodePacket(
  v: DataView,
  off: number,
  msgEnd: number,
  out: PacketArrays,
  counters: DecodeCounters,
  cut: boolean,
): void {
  const i = out.count;
  if (off + NLMSG_HDRLEN + NFGENMSG_LEN > msgEnd) {
    counters.malformed++;
    return;
  }
  let haveId = false;
  let bad = false;
  let capLen = -1;
  out.payloadOffset[i] = 0;
  out.payloadLength[i] = 0;
  out.marks[i] = 0;
  out.hwProtocol[i] = 0;
  out.hooks[i] = 0;
  out.inIfindex[i] = 0;
  out.outIfindex[i] = 0;
  out.skbInfo[i] = 0;
  out.family[i] = v.getUint8(off + NLMSG_HDRLEN);
  let a = off + NLMSG_HDRLEN + NFGENMSG_LEN;
  while (a + NLA_HDRLEN <= msgEnd) {
    const alen = v.getUint16(a, HOST_LE);
    const atype = v.getUint16(a + 2, HOST_LE) & NLA_TYPE_MASK;
    const dlen = alen - NLA_HDRLEN;
    if (alen < NLA_HDRLEN) {
      bad = true;
      break;
    }
    if (a + alen > msgEnd) {
      // Only the payload (the last attribute) may run past a cut datagram.
      if (cut && atype === NFQA_PAYLOAD) {
        out.payloadOffset[i] = a + NLA_HDRLEN;
        out.payloadLength[i] = msgEnd - a - NLA_HDRLEN;
        if (capLen < 0) capLen = dlen;
      } else bad = true;
      break;
    }
    const d = a + NLA_HDRLEN;
    switch (atype) {
      case NFQA_PACKET_HDR:
        if (dlen < 7) {
          bad = true;
          break;
        }
        out.ids[i] = v.getUint32(d, false);
        out.hwProtocol[i] = v.getUint16(d + 4, false);
        out.hooks[i] = v.getUint8(d + 6);
        haveId = true;
        break;
      case NFQA_PAYLOAD:
        out.payloadOffset[i] = d;
        out.payloadLength[i] = dlen;
        break;
      case NFQA_MARK:
        if (dlen >= 4) out.marks[i] = v.getUint32(d, false);
        else bad = true;
        break;
      case NFQA_CAP_LEN:
        if (dlen >= 4) capLen = v.getUint32(d, false);
        else bad = true;
        break;
      case NFQA_SKB_INFO:
        if (dlen >= 4) out.skbInfo[i] = v.getUint32(d, false);
        else bad = true;
        break;
      case NFQA_IFINDEX_INDEV:
        if (dlen >= 4) out.inIfindex[i] = v.getUint32(d, false);
        else bad = true;
        break;
      case NFQA_IFINDEX_OUTDEV:
        if (dlen >= 4) out.outIfindex[i] = v.getUint32(d, false);
        else bad = true;
        break;
      default:
        break; // attributes we do not use (hwaddr, timestamp, ct, ...) are skipped
    }
    a += align4(alen);
  }
  if (bad) counters.malformed++;
  // Without the id no verdict can be given; with it, deliver whatever was parsed so the
  // packet is not stranded in the kernel queue.
  if (!haveId) {
    if (!bad) counters.malformed++;
    return;
  }
  out.origLength[i] = capLen >= 0 ? capLen : out.payloadLength[i];
  out.count = i + 1;
}
