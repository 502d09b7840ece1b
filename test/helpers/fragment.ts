// Splits a crafted IP packet (from craft.ts ipPacket) into fragments, as a sender with a
// smaller MTU would: IPv4 by offset and more-fragments flag, IPv6 with a fragment header.
import { internetChecksum } from "./craft.js";

const IPV6_FRAGMENT = 44;

/** Fragments of `packet` no larger than `mtu` bytes each, in order (first fragment first). */
export function fragmentPacket(packet: Uint8Array, mtu: number, id: number): Uint8Array[] {
  return packet[0] >> 4 === 4 ? fragment4(packet, mtu, id) : fragment6(packet, mtu, id);
}

function fragment4(packet: Uint8Array, mtu: number, id: number): Uint8Array[] {
  const header = packet.subarray(0, 20);
  const payload = packet.subarray(20);
  const step = Math.floor((mtu - 20) / 8) * 8;
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += step) {
    const chunk = payload.subarray(off, Math.min(off + step, payload.length));
    const more = off + step < payload.length;
    const f = new Uint8Array(20 + chunk.length);
    f.set(header);
    f.set(chunk, 20);
    const v = new DataView(f.buffer);
    v.setUint16(2, f.length);
    v.setUint16(4, id & 0xffff);
    v.setUint16(6, (more ? 0x2000 : 0) | (off / 8));
    v.setUint16(10, 0);
    v.setUint16(10, internetChecksum(f.subarray(0, 20)));
    out.push(f);
  }
  return out;
}

function fragment6(packet: Uint8Array, mtu: number, id: number): Uint8Array[] {
  const header = packet.subarray(0, 40);
  const next = packet[6];
  const payload = packet.subarray(40);
  const step = Math.floor((mtu - 48) / 8) * 8;
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += step) {
    const chunk = payload.subarray(off, Math.min(off + step, payload.length));
    const more = off + step < payload.length;
    const f = new Uint8Array(48 + chunk.length);
    f.set(header);
    f.set(chunk, 48);
    const v = new DataView(f.buffer);
    v.setUint16(4, 8 + chunk.length);
    v.setUint8(6, IPV6_FRAGMENT);
    v.setUint8(40, next);
    v.setUint16(42, off | (more ? 1 : 0));
    v.setUint32(44, id >>> 0);
    out.push(f);
  }
  return out;
}
