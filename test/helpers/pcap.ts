// Minimal classic-pcap reader for tests: yields each record with the link header stripped,
// so `ip` starts at the IP header (as NFQUEUE delivers packets). pcapng is not supported
// (tcpdump -w writes classic pcap).

export interface PcapPacket {
  /** Index of the record in the file. */
  index: number;
  /** The IP packet (captured bytes only), or null for a non-IP frame (ARP...). */
  ip: Uint8Array | null;
  /** Length of the packet on the wire minus the link header (>= ip.length when cut by -s). */
  origLen: number;
  /** EtherType (or equivalent) of the frame. */
  etherType: number;
  tsSec: number;
  tsFrac: number;
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_IPV4 = 228;
const LINKTYPE_IPV6 = 229;
const LINKTYPE_LINUX_SLL2 = 276;

export interface Pcap {
  linkType: number;
  snapLen: number;
  packets: PcapPacket[];
}

export function parsePcap(file: Uint8Array): Pcap {
  if (file.length < 24) throw new Error("pcap: file shorter than its header");
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const magic = view.getUint32(0, true);
  let little: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) little = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) little = false;
  else throw new Error(`pcap: bad magic 0x${magic.toString(16)} (pcapng is not supported)`);
  const snapLen = view.getUint32(16, little);
  // The upper bits of the link-type field carry FCS information; the type is the low 16.
  const linkType = view.getUint32(20, little) & 0xffff;
  const packets: PcapPacket[] = [];
  let at = 24;
  while (at + 16 <= file.length) {
    const tsSec = view.getUint32(at, little);
    const tsFrac = view.getUint32(at + 4, little);
    const inclLen = view.getUint32(at + 8, little);
    const origLen = view.getUint32(at + 12, little);
    at += 16;
    if (at + inclLen > file.length) throw new Error(`pcap: record ${packets.length} truncated`);
    const frame = file.subarray(at, at + inclLen);
    at += inclLen;
    const { ip, etherType, headerLen } = stripLink(linkType, frame);
    packets.push({
      index: packets.length,
      ip,
      origLen: origLen - headerLen,
      etherType,
      tsSec,
      tsFrac,
    });
  }
  return { linkType, snapLen, packets };
}

/** The IP packets of a pcap file (non-IP frames have ip === null). */
export function readPcap(file: Uint8Array): PcapPacket[] {
  return parsePcap(file).packets;
}

function stripLink(
  linkType: number,
  frame: Uint8Array,
): { ip: Uint8Array | null; etherType: number; headerLen: number } {
  let etherType: number;
  let off: number;
  switch (linkType) {
    case LINKTYPE_ETHERNET: {
      if (frame.length < 14) return { ip: null, etherType: 0, headerLen: frame.length };
      etherType = (frame[12] << 8) | frame[13];
      off = 14;
      // 802.1Q / 802.1ad tags, possibly stacked.
      while ((etherType === 0x8100 || etherType === 0x88a8) && frame.length >= off + 4) {
        etherType = (frame[off + 2] << 8) | frame[off + 3];
        off += 4;
      }
      break;
    }
    case LINKTYPE_LINUX_SLL:
      if (frame.length < 16) return { ip: null, etherType: 0, headerLen: frame.length };
      etherType = (frame[14] << 8) | frame[15];
      off = 16;
      break;
    case LINKTYPE_LINUX_SLL2:
      if (frame.length < 20) return { ip: null, etherType: 0, headerLen: frame.length };
      etherType = (frame[0] << 8) | frame[1];
      off = 20;
      break;
    case LINKTYPE_RAW:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6: {
      const v = frame.length > 0 ? frame[0] >> 4 : 0;
      etherType = v === 4 ? 0x0800 : v === 6 ? 0x86dd : 0;
      off = 0;
      break;
    }
    default:
      throw new Error(`pcap: unsupported link type ${linkType}`);
  }
  const ip = etherType === 0x0800 || etherType === 0x86dd ? frame.subarray(off) : null;
  return { ip, etherType, headerLen: off };
}
