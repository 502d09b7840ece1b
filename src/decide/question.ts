// "Where does this packet go?" asked without a packet: a textual 5-tuple made into the
// classifier's result and put through decide(), as `nflb fwmark` does. Pure: no I/O.
import { DEFAULT_FRAG_CONFIG, FragmentTable } from "../fragments/table.js";
import {
  type ClassifyOptions,
  FragKind,
  HashMode,
  IpProto,
  infoFromTuple,
  layoutKey,
  type PacketInfo,
} from "../packet/info.js";
import type { Decider, Decision } from "./decide.js";

export interface PacketQuestion {
  /** Protocol name or number; ICMP and ICMPv6 are asked as an echo request. */
  proto: number | string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /**
   * Ask for a fragment of a datagram of this flow: its first fragment (which carries the
   * ports), or a later one (no ports), which the fragment table sends where the first
   * went, unless the tier hands it to another instance.
   */
  fragment?: "first" | "later";
}

/** An empty packet body: a question has no L4 bytes (byte-match flows cannot match it). */
const NO_BYTES = new Uint8Array(0);
/** The datagram id the fragments of a question share. */
const FRAG_ID = 1;

/**
 * Decides for the question with `decider` (for a fragment it gets a fresh fragment table
 * if it has none: a later fragment first sends its first fragment through it). Fills `info`
 * with the packet as the classifier would have seen it and `out` with the decision.
 * Throws on a bad address, port or protocol.
 */
export function decideQuestion(
  decider: Decider,
  q: PacketQuestion,
  options: ClassifyOptions,
  info: PacketInfo,
  out: Decision,
): void {
  infoFromTuple(q.proto, q.src, q.sport, q.dst, q.dport, options, info);
  if (info.proto === IpProto.ICMP) info.icmpType = 8;
  if (info.proto === IpProto.ICMPv6) info.icmpType = 128;
  if (q.fragment === undefined) {
    decider.decide(info, NO_BYTES, 0, 0, 0, 0, out);
    return;
  }
  // The fragment queue's path: the first fragment is recorded, a later one follows it.
  decider.fragments ??= new FragmentTable(DEFAULT_FRAG_CONFIG, 0);
  info.fragKind = FragKind.First;
  info.fragId = FRAG_ID;
  decider.decide(info, NO_BYTES, 0, 0, 0, 0, out);
  if (q.fragment === "first") return;
  // A later fragment: no ports, keyed on the addresses (as classify() leaves it).
  info.fragKind = FragKind.Later;
  info.hashMode = HashMode.Addresses;
  info.sport = 0;
  info.dport = 0;
  layoutKey(info);
  decider.decide(info, NO_BYTES, 0, 0, 0, 1, out);
}
