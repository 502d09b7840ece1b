// Codec tests against byte layouts written out by hand from the kernel headers
// (include/uapi/linux/netlink.h, netfilter/nfnetlink_queue.h), not produced by the
// encoder under test. Netlink headers are host order: these tests assume a
// little-endian host (x86-64, arm64), which the first test checks.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  decodeMessages,
  encodeConfig,
  encodeVerdict,
  HOST_LE,
  newDecodeCounters,
  PacketArrays,
  parseAck,
  viewOf,
} from "../../src/nfqueue/codec.js";
import {
  NF_ACCEPT,
  NF_DROP,
  NFQ_TYPE_CONFIG,
  NFQA_CFG_F_FAIL_OPEN,
  NFQA_CFG_F_GSO,
  NFQA_SKB_GSO,
  NFQNL_CFG_CMD_BIND,
  NFQNL_CFG_CMD_UNBIND,
  NFQNL_COPY_PACKET,
} from "../../src/nfqueue/constants.js";

const le16 = (v: number) => [v & 0xff, (v >> 8) & 0xff];
const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
const be16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const be32 = (v: number) => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const pad4 = (b: number[]) => [...b, ...new Array((4 - (b.length % 4)) % 4).fill(0)];

/** struct nlattr + data, padded to 4 like nla_put. */
function attr(type: number, data: number[]): number[] {
  return pad4([...le16(4 + data.length), ...le16(type), ...data]);
}

/** struct nlmsghdr + body; nlmsg_len is the unpadded length, as the kernel sets it. */
function nlmsg(type: number, flags: number, seq: number, body: number[], pid = 0): number[] {
  return [
    ...le32(16 + body.length),
    ...le16(type),
    ...le16(flags),
    ...le32(seq),
    ...le32(pid),
    ...body,
  ];
}

const nfgen = (family: number, queue: number) => [family, 0, ...be16(queue)];

/** An IPv4 UDP packet's first bytes, as the payload. */
function ipv4Udp(len: number): number[] {
  const b = new Array(len).fill(0).map((_, i) => (i * 7 + 3) & 0xff);
  b[0] = 0x45;
  b[9] = 17;
  return b;
}

/** A packet message laid out like nfqnl_build_packet_message() does for a packet
 * received on ifindex 2 with a mark, a hardware address, a timestamp, cut to 29 bytes. */
function kernelPacket(
  id: number,
  opts: { mark?: number; payload?: number[]; capLen?: number; skbInfo?: number } = {},
): number[] {
  const payload = opts.payload ?? ipv4Udp(29);
  const body = [
    ...nfgen(2, 3),
    ...attr(1, [...be32(id), ...be16(0x0800), 0]), // NFQA_PACKET_HDR, 7 bytes
    ...attr(5, be32(2)), // NFQA_IFINDEX_INDEV
    ...(opts.mark !== undefined ? attr(3, be32(opts.mark)) : []), // NFQA_MARK
    ...attr(9, [...be16(6), 0, 0, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0]), // NFQA_HWADDR
    ...attr(4, [...be32(0), ...be32(1700000000), ...be32(0), ...be32(12345)]), // NFQA_TIMESTAMP
    ...attr(0x8000 | 11, attr(1, [1, 2, 3, 4])), // NFQA_CT, nested: skipped
    ...(opts.capLen !== undefined ? attr(13, be32(opts.capLen)) : []), // NFQA_CAP_LEN
    ...(opts.skbInfo !== undefined ? attr(14, be32(opts.skbInfo)) : []), // NFQA_SKB_INFO
    ...attr(10, payload), // NFQA_PAYLOAD, last
  ];
  // nlmsg_len counts the final attribute's padding (nla_put pads, nlmsg_end measures tail)
  return nlmsg(0x0300, 0, 0, body);
}

function errorMsg(error: number, reqType: number, reqSeq: number): number[] {
  return nlmsg(2, 0x100, reqSeq, [
    ...le32(error >>> 0),
    ...nlmsg(reqType, 5, reqSeq, []).slice(0, 16),
  ]);
}

function decodeAll(bytes: number[], capacity = 8) {
  const buf = new Uint8Array(bytes);
  const out = new PacketArrays(capacity, buf);
  const c = newDecodeCounters();
  const stop = decodeMessages(viewOf(buf), 0, buf.length, out, c);
  return { buf, out, c, stop };
}

test("host is little-endian (netlink headers in these fixtures are LE)", () => {
  assert.equal(HOST_LE, true);
});

test("config message: bind + params + maxlen + flags/mask, bytes exact", () => {
  const buf = new Uint8Array(128).fill(0xee); // garbage must not leak into padding
  const end = encodeConfig(
    viewOf(buf),
    0,
    3,
    {
      command: NFQNL_CFG_CMD_BIND,
      copyMode: NFQNL_COPY_PACKET,
      copyRange: 256,
      maxLen: 1000,
      flags: NFQA_CFG_F_GSO,
      mask: NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN,
    },
    7,
  );
  const expected = [
    ...[0x40, 0, 0, 0, 0x02, 0x03, 0x05, 0x00, 7, 0, 0, 0, 0, 0, 0, 0], // nlmsghdr
    ...[0, 0, 0, 3], // nfgenmsg: AF_UNSPEC, v0, res_id = queue 3 BE
    ...[8, 0, 1, 0, 1, 0, 0, 0], // NFQA_CFG_CMD bind, pf 0
    ...[9, 0, 2, 0, 0, 0, 1, 0, 2, 0, 0, 0], // NFQA_CFG_PARAMS range 256 BE, mode 2, pad
    ...[8, 0, 3, 0, 0, 0, 0x03, 0xe8], // NFQA_CFG_QUEUE_MAXLEN 1000 BE
    ...[8, 0, 5, 0, 0, 0, 0, 4], // NFQA_CFG_FLAGS GSO
    ...[8, 0, 4, 0, 0, 0, 0, 5], // NFQA_CFG_MASK GSO|FAIL_OPEN
  ];
  assert.equal(end, 64);
  assert.deepEqual([...buf.subarray(0, end)], expected);
});

test("config message: unbind only, without ACK flag", () => {
  const buf = new Uint8Array(64);
  const end = encodeConfig(viewOf(buf), 0, 65535, { command: NFQNL_CFG_CMD_UNBIND }, 1, false);
  assert.deepEqual(
    [...buf.subarray(0, end)],
    [
      0x1c, 0, 0, 0, 0x02, 0x03, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 8, 0, 1, 0, 2,
      0, 0, 0,
    ],
  );
});

test("verdict batch: concatenated messages, bytes exact", () => {
  const buf = new Uint8Array(200).fill(0xee);
  const v = viewOf(buf);
  let off = encodeVerdict(v, 0, 3, 0x01020304, NF_ACCEPT, 2);
  assert.equal(off, 40);
  off = encodeVerdict(v, off, 3, 5, NF_DROP, -1);
  assert.equal(off, 72);
  off = encodeVerdict(v, off, 3, 6, NF_ACCEPT, 0xfffffffe);
  assert.equal(off, 112);
  const hdr = (len: number) => [len, 0, 0, 0, 0x01, 0x03, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
  assert.deepEqual(
    [...buf.subarray(0, off)],
    [
      ...hdr(40),
      ...[0, 0, 0, 3],
      ...[12, 0, 2, 0, 0, 0, 0, 1, 1, 2, 3, 4], // NFQA_VERDICT_HDR accept, id BE
      ...[8, 0, 3, 0, 0, 0, 0, 2], // NFQA_MARK 2 BE
      ...hdr(32),
      ...[0, 0, 0, 3],
      ...[12, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5], // drop id 5, no mark
      ...hdr(40),
      ...[0, 0, 0, 3],
      ...[12, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 6],
      ...[8, 0, 3, 0, 0xff, 0xff, 0xff, 0xfe],
    ],
  );
});

test("ACK and error answers", () => {
  const ok = new Uint8Array(errorMsg(0, NFQ_TYPE_CONFIG, 9));
  assert.deepEqual(parseAck(viewOf(ok), 0, ok.length), {
    error: 0,
    seq: 9,
    requestType: NFQ_TYPE_CONFIG,
  });
  const eperm = new Uint8Array(errorMsg(-1, NFQ_TYPE_CONFIG, 10));
  assert.deepEqual(parseAck(viewOf(eperm), 0, eperm.length), {
    error: -1,
    seq: 10,
    requestType: NFQ_TYPE_CONFIG,
  });
  const pkt = new Uint8Array(kernelPacket(1));
  assert.equal(parseAck(viewOf(pkt), 0, pkt.length), null);
});

test("packet message as the kernel lays it out", () => {
  const payload = ipv4Udp(29);
  const { buf, out, c, stop } = decodeAll(
    kernelPacket(0xdeadbeef, { mark: 0x80000001, payload, capLen: 1500, skbInfo: NFQA_SKB_GSO }),
  );
  assert.equal(stop, buf.length);
  assert.equal(out.count, 1);
  assert.deepEqual(c, { malformed: 0, errorAcks: 0, lastError: 0, other: 0 });
  assert.equal(out.ids[0], 0xdeadbeef);
  assert.equal(out.hwProtocol[0], 0x0800);
  assert.equal(out.hooks[0], 0);
  assert.equal(out.family[0], 2);
  assert.equal(out.marks[0], 0x80000001);
  assert.equal(out.inIfindex[0], 2);
  assert.equal(out.outIfindex[0], 0);
  assert.equal(out.skbInfo[0], NFQA_SKB_GSO);
  assert.equal(out.payloadLength[0], 29);
  assert.equal(out.origLength[0], 1500);
  const off = out.payloadOffset[0];
  assert.deepEqual([...buf.subarray(off, off + 29)], payload);
  assert.equal(out.buf, buf);
});

test("absent optional attributes read as zero; origLength falls back to payload length", () => {
  const { out } = decodeAll(kernelPacket(7, { payload: ipv4Udp(28) }));
  assert.equal(out.count, 1);
  assert.equal(out.marks[0], 0);
  assert.equal(out.skbInfo[0], 0);
  assert.equal(out.origLength[0], 28);
});

test("several messages in one datagram, including an error answer and a NOOP", () => {
  const bytes = [
    ...kernelPacket(1, { mark: 1 }),
    ...errorMsg(-2, 0x0301, 0), // ENOENT: verdict for an unknown id
    ...nlmsg(1, 0, 0, []), // NLMSG_NOOP
    ...kernelPacket(2, { mark: 2 }),
  ];
  const { out, c } = decodeAll(bytes);
  assert.equal(out.count, 2);
  assert.deepEqual([...out.ids.subarray(0, 2)], [1, 2]);
  assert.deepEqual([...out.marks.subarray(0, 2)], [1, 2]);
  assert.equal(c.errorAcks, 1);
  assert.equal(c.lastError, -2);
  assert.equal(c.other, 1);
  assert.equal(c.malformed, 0);
});

test("full arrays: decoding stops at the next message and resumes from there", () => {
  const first = kernelPacket(10);
  const bytes = [...first, ...kernelPacket(11), ...kernelPacket(12)];
  const buf = new Uint8Array(bytes);
  const v = viewOf(buf);
  const out = new PacketArrays(2, buf);
  const c = newDecodeCounters();
  let pos = decodeMessages(v, 0, buf.length, out, c);
  assert.equal(out.count, 2);
  assert.ok(pos > first.length && pos < buf.length);
  out.count = 0;
  pos = decodeMessages(v, pos, buf.length, out, c);
  assert.equal(pos, buf.length);
  assert.equal(out.count, 1);
  assert.equal(out.ids[0], 12);
});

test("malformed input is counted, never thrown", () => {
  // nlmsg_len below the header size
  let r = decodeAll([...le32(8), ...le16(0x0300), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(r.out.count, 0);
  assert.equal(r.c.malformed, 1);
  // nlmsg_len past the datagram (not a cut datagram): the tail is dropped
  const p = kernelPacket(3);
  r = decodeAll([...le32(p.length + 100), ...p.slice(4)]);
  assert.equal(r.out.count, 0);
  assert.equal(r.c.malformed, 1);
  // fewer than 16 bytes
  r = decodeAll([1, 2, 3]);
  assert.equal(r.c.malformed, 1);
  // a packet message without NFQA_PACKET_HDR cannot get a verdict: skipped
  r = decodeAll(nlmsg(0x0300, 0, 0, [...nfgen(2, 3), ...attr(10, ipv4Udp(20))]));
  assert.equal(r.out.count, 0);
  assert.equal(r.c.malformed, 1);
  // a short PACKET_HDR
  r = decodeAll(nlmsg(0x0300, 0, 0, [...nfgen(2, 3), ...attr(1, [0, 0, 0, 1])]));
  assert.equal(r.out.count, 0);
  assert.equal(r.c.malformed, 1);
  // a bad attribute after the id: the packet is still delivered (so it gets a verdict)
  r = decodeAll(
    nlmsg(0x0300, 0, 0, [
      ...nfgen(2, 3),
      ...attr(1, [0, 0, 0, 9, 8, 0, 1]),
      ...le16(2),
      ...le16(3),
    ]),
  );
  assert.equal(r.out.count, 1);
  assert.equal(r.out.ids[0], 9);
  assert.equal(r.out.payloadLength[0], 0);
  assert.equal(r.c.malformed, 1);
  // an attribute running past its message
  r = decodeAll(
    nlmsg(0x0300, 0, 0, [
      ...nfgen(2, 3),
      ...attr(1, [0, 0, 0, 9, 8, 0, 1]),
      ...le16(200),
      ...le16(10),
    ]),
  );
  assert.equal(r.out.count, 1);
  assert.equal(r.c.malformed, 1);
  // a message too short for nfgenmsg
  r = decodeAll(nlmsg(0x0300, 0, 0, [2, 0]));
  assert.equal(r.out.count, 0);
  assert.equal(r.c.malformed, 1);
});

test("a datagram cut by the receive slot still yields the packet, payload clamped", () => {
  const full = kernelPacket(42, { payload: ipv4Udp(200) });
  const cutAt = full.length - 150;
  const buf = new Uint8Array(full.slice(0, cutAt));
  const out = new PacketArrays(4, buf);
  const c = newDecodeCounters();
  decodeMessages(viewOf(buf), 0, buf.length, out, c, true);
  assert.equal(out.count, 1);
  assert.equal(out.ids[0], 42);
  assert.equal(out.payloadOffset[0] + out.payloadLength[0], cutAt);
  assert.equal(out.origLength[0], 200);
  assert.equal(c.malformed, 0);
  // without the cut flag the same bytes are malformed
  const out2 = new PacketArrays(4, buf);
  decodeMessages(viewOf(buf), 0, buf.length, out2, c, false);
  assert.equal(out2.count, 0);
  assert.equal(c.malformed, 1);
});

test("decode and verdict round trip: ids decoded are the ids encoded", () => {
  const ids = [1, 2, 0x7fffffff, 0xffffffff];
  const buf = new Uint8Array(ids.flatMap((id) => kernelPacket(id)));
  const out = new PacketArrays(8, buf);
  decodeMessages(viewOf(buf), 0, buf.length, out, newDecodeCounters());
  const vb = new Uint8Array(40 * out.count);
  const vv = viewOf(vb);
  let off = 0;
  for (let i = 0; i < out.count; i++) off = encodeVerdict(vv, off, 3, out.ids[i], NF_ACCEPT, i);
  const back: number[] = [];
  for (let p = 0; p < off; p += vv.getUint32(p, true)) back.push(vv.getUint32(p + 28, false));
  assert.deepEqual(back, ids);
});
