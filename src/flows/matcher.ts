// The compiled flow matcher: which flow (load balancer) a classified packet belongs to.
// Pure: no I/O, no clock; match() allocates nothing and never throws.
//
// Design. Flows are sorted by priority (descending), then name; flow i is bit i of a
// bitset of W = ceil(n/32) words, so the lowest set bit of a candidate set is the best
// flow. Each dimension of the packet maps, by a table or a binary search, to the id of an
// interned bitset (equal sets are stored once) holding the flows that accept that value:
//
//   - destination and source address, per family: the boundaries of every CIDR of every
//     flow cut the address space into elementary intervals; one sorted array of interval
//     starts per (family, direction), binary-searched (IPv4: one int32 compare a step;
//     IPv6: four words), gives the interval's set: the flows that list a CIDR covering it,
//     plus the flows without CIDRs for that direction;
//   - destination and source port, per protocol (tcp, udp, sctp): a table of 65536 set
//     ids, plus one entry for "no ports known" (later fragments, or an ICMP error quoting
//     one) = the flows of that protocol with no port constraint. The protocol is folded
//     into these sets: the dport set of tcp port 80 holds the TCP (and any-protocol)
//     flows accepting port 80. Packets of other protocols (ICMP echo, GRE, ESP...) use the
//     set of flows without protocols instead; ICMP echo with promiscuousPing uses the set
//     of all flows.
//
// The answer is the first flow in the intersection of the four sets. Every set knows its
// size, and the small ones (<= max(W, 8) flows) also keep their members as a sorted list:
// when the smallest of the four sets has a list, its members are walked in priority
// order, each tested against the other three bitsets (one word each), and the first that
// passes (and its byte matches, if it has any for the packet's protocol) wins. With
// realistic flows (services told apart by address or port) one dimension is that
// selective, whatever the number of flows, and a match costs 4 lookups (2 table reads,
// 2 binary searches of log2(intervals) steps) and a step or two.
// Otherwise the bitsets are ANDed a word at a time, visiting only the words where the two
// smallest sets both have flows (each set has a summary: one bit per non-zero word), and
// stopping at the first flow that passes. The worst case, every dimension unselective and
// their members interleaved yet the intersection empty or late, visits all W words (63 at
// 2,000 flows, ~1.5 ns each here). That answer depends only on the four set ids (byte
// matches aside: a cached flow with byte matches to check falls back to the scan), so a
// direct-mapped cache of 4,096 entries, preallocated, keeps it; traffic repeats few set
// combinations (one per VIP, port and client-address interval), so the scan is rare.
// bench/flows.ts measures the cases, cache on and off.
//
// Byte matches are kept per (flow, protocol) as flat arrays of (offset, size, mask,
// value) and checked only for candidates that carry terms for the packet's protocol, on
// buf[info.l4Offset...], a term needing bytes past info.l4Length failing. That part is
// linear: flows that match a packet in every dimension but fail their byte matches are
// tried one by one (~7 ns each here), so 2,000 flows for one VIP and port told apart
// only by byte matches cost ~14 us a packet. If that use appears, index the fields
// (protocol, offset, size, mask) shared by many flows as further dimensions.
//
// Compile: sweeps over the sorted CIDR and port boundaries of each dimension keep a
// running bitset (a flow's bit set at its range's start, cleared past its end) and intern
// it at each boundary: O(boundaries x W) per dimension, ~20 ms for 2,000 flows here.
import { HashMode, IpProto, type PacketInfo } from "../packet/info.js";
import {
  type AddressRange,
  analyseFlow,
  compareFlows,
  FLOW_PROTOCOLS,
  FlowError,
  type FlowSpec,
  flowInputOf,
  type ParsedFlow,
  type PortRange,
} from "./spec.js";

export interface FlowMatcherOptions {
  /** ICMP echo (request or reply) matches any flow whose addresses match. Default false. */
  readonly promiscuousPing?: boolean;
  /**
   * Entries of the cache of word-scan answers (rounded down to a power of 2), 0 = none.
   * Default 4096 (80 KiB).
   */
  readonly cacheEntries?: number;
}

/** Port table entries per protocol: 65536 ports + "ports unknown". */
const PORT_SLOTS = 65537;
const PORT_UNKNOWN = 65536;
const PROTOS = FLOW_PROTOCOLS.length;
/** Flips the sign bit: unsigned order of 32-bit words becomes signed int32 order. */
const SIGN = 0x80000000 | 0;

/** Set by FlowMatcher.scan: the first flow of the intersection, byte matches aside. */
let scanFirst = -1;

/** Interns bitsets of W words: equal sets get one id; ids index `words` by id * W. */
class SetInterner {
  words: Int32Array;
  readonly counts: number[] = [];
  private readonly byHash = new Map<number, number[]>();
  constructor(readonly W: number) {
    this.words = new Int32Array(W * 64);
  }

  intern(bits: Int32Array): number {
    const W = this.W;
    let h = 0x811c9dc5 | 0;
    for (let i = 0; i < W; i++) h = Math.imul(h ^ bits[i], 0x01000193);
    const bucket = this.byHash.get(h);
    if (bucket) {
      for (const id of bucket) {
        const o = id * W;
        let same = true;
        for (let i = 0; i < W; i++) {
          if (this.words[o + i] !== bits[i]) {
            same = false;
            break;
          }
        }
        if (same) return id;
      }
    }
    const id = this.counts.length;
    if ((id + 1) * W > this.words.length) {
      const grown = new Int32Array(this.words.length * 2);
      grown.set(this.words);
      this.words = grown;
    }
    this.words.set(bits.subarray(0, W), id * W);
    let count = 0;
    for (let i = 0; i < W; i++) count += popcount(bits[i]);
    this.counts.push(count);
    if (bucket) bucket.push(id);
    else this.byHash.set(h, [id]);
    return id;
  }
}

function popcount(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

function setBit(bits: Int32Array, f: number): void {
  bits[f >> 5] |= 1 << (f & 31);
}

interface Segment {
  lo: bigint;
  /** Exclusive end. */
  end: bigint;
  flow: number;
}

/**
 * Elementary intervals of [0, spaceEnd): starts (ascending, the first 0) and the set id
 * of each; `base` holds the flows present everywhere. Neighbours with equal sets merge.
 */
function sweep(
  interner: SetInterner,
  base: Int32Array,
  segments: readonly Segment[],
  spaceEnd: bigint,
): { starts: bigint[]; ids: number[] } {
  const events: { pos: bigint; add: boolean; flow: number }[] = [];
  for (const s of segments) {
    events.push({ pos: s.lo, add: true, flow: s.flow });
    if (s.end < spaceEnd) events.push({ pos: s.end, add: false, flow: s.flow });
  }
  // Removals first: a flow's own adjacent ranges (end == next start) stay set.
  events.sort((a, b) =>
    a.pos < b.pos ? -1 : a.pos > b.pos ? 1 : (a.add ? 1 : 0) - (b.add ? 1 : 0),
  );
  const cur = base.slice();
  const starts: bigint[] = [0n];
  const ids: number[] = [interner.intern(cur)];
  let i = 0;
  while (i < events.length) {
    const pos = events[i].pos;
    while (i < events.length && events[i].pos === pos) {
      const e = events[i++];
      if (e.add) cur[e.flow >> 5] |= 1 << (e.flow & 31);
      else cur[e.flow >> 5] &= ~(1 << (e.flow & 31));
    }
    const id = interner.intern(cur);
    const last = starts.length - 1;
    if (pos === starts[last]) {
      ids[last] = id;
      if (last > 0 && ids[last - 1] === id) {
        starts.pop();
        ids.pop();
      }
    } else if (id !== ids[last]) {
      starts.push(pos);
      ids.push(id);
    }
  }
  return { starts, ids };
}

/** Index of the interval holding `key` (int32, sign-flipped): the last start <= key. */
function search4(starts: Int32Array, key: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= key) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The same over 128-bit starts, four sign-flipped words each, most significant first. */
function search6(starts: Int32Array, a: number, b: number, c: number, d: number): number {
  let lo = 0;
  let hi = (starts.length >> 2) - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    const o = mid << 2;
    const s0 = starts[o];
    let le: boolean;
    if (s0 !== a) le = s0 < a;
    else if (starts[o + 1] !== b) le = starts[o + 1] < b;
    else if (starts[o + 2] !== c) le = starts[o + 2] < c;
    else le = starts[o + 3] <= d;
    if (le) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function word4(bytes: Uint8Array, o: number): number {
  return ((bytes[o] << 24) | (bytes[o + 1] << 16) | (bytes[o + 2] << 8) | bytes[o + 3]) ^ SIGN;
}

/**
 * A compiled flow set as plain data: what the matcher looks up. It is posted between
 * threads as it is (sharedFlows() puts its arrays in shared memory, so every worker sees
 * one copy); FlowMatcher adopts it without compiling again.
 */
export interface CompiledFlows {
  /** The flows, priority descending, then name. */
  readonly flows: readonly FlowSpec[];
  /** Per flow index: 1 when its load balancer hashes on addresses only (no protocols). */
  readonly hashOnAddresses: Uint8Array;
  /** The flows' --udpencap ports, ascending: UDP to them is SCTP over UDP. */
  readonly encapPorts: Uint16Array;
  readonly n: number;
  readonly W: number;
  readonly SW: number;
  readonly allId: number;
  readonly anyProtoId: number;
  readonly words: Int32Array;
  readonly counts: Int32Array;
  readonly summaries: Int32Array;
  readonly listStart: Int32Array;
  readonly lists: Int32Array;
  readonly dportIds: Int32Array;
  readonly sportIds: Int32Array;
  readonly dst4Starts: Int32Array;
  readonly dst4Ids: Int32Array;
  readonly src4Starts: Int32Array;
  readonly src4Ids: Int32Array;
  readonly dst6Starts: Int32Array;
  readonly dst6Ids: Int32Array;
  readonly src6Starts: Int32Array;
  readonly src6Ids: Int32Array;
  readonly termStart: Int32Array;
  readonly termOffset: Int32Array;
  readonly termSize: Int32Array;
  readonly termMask: Int32Array;
  readonly termValue: Int32Array;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Validates every flow (as checkFlowSpec does) and compiles them. Throws FlowError. */
export function compileFlows(flows: readonly FlowSpec[]): CompiledFlows {
  const c = {} as Mutable<CompiledFlows>;
  const parsed: ParsedFlow[] = flows.map((f) => analyseFlow(flowInputOf(f)));
  parsed.sort((a, b) => compareFlows(a.spec, b.spec));
  const nameIndex = new Map<string, number>();
  parsed.forEach((p, i) => {
    if (nameIndex.has(p.spec.name)) throw new FlowError(`duplicate flow name "${p.spec.name}"`);
    nameIndex.set(p.spec.name, i);
  });
  const n = parsed.length;
  const W = Math.max(1, Math.ceil(n / 32));
  c.n = n;
  c.W = W;
  c.flows = Object.freeze(parsed.map((p) => Object.freeze(p.spec)));
  c.hashOnAddresses = Uint8Array.from(parsed, (p) => (p.spec.protocols.length === 0 ? 1 : 0));

  const interner = new SetInterner(W);
  const empty = new Int32Array(W);
  interner.intern(empty); // id 0: no flow
  const all = new Int32Array(W);
  for (let f = 0; f < n; f++) setBit(all, f);
  c.allId = interner.intern(all);
  const anyProto = new Int32Array(W);
  parsed.forEach((p, f) => {
    if (p.spec.protocols.length === 0) setBit(anyProto, f);
  });
  c.anyProtoId = interner.intern(anyProto);

  // Ports, per protocol.
  c.dportIds = new Int32Array(PROTOS * PORT_SLOTS);
  c.sportIds = new Int32Array(PROTOS * PORT_SLOTS);
  FLOW_PROTOCOLS.forEach((proto, pi) => {
    const accepts = (p: ParsedFlow) =>
      p.spec.protocols.length === 0 || p.spec.protocols.includes(proto);
    for (const [table, pick] of [
      [c.dportIds, (p: ParsedFlow) => p.dports],
      [c.sportIds, (p: ParsedFlow) => p.sports],
    ] as const) {
      const base = new Int32Array(W);
      const segments: Segment[] = [];
      parsed.forEach((p, f) => {
        if (!accepts(p)) return;
        const ranges: PortRange[] = pick(p);
        if (ranges.length === 0) setBit(base, f);
        for (const r of ranges) {
          segments.push({ lo: BigInt(r.lo), end: BigInt(r.hi + 1), flow: f });
        }
      });
      const { starts, ids } = sweep(interner, base, segments, 65536n);
      const at = pi * PORT_SLOTS;
      for (let k = 0; k < starts.length; k++) {
        const from = Number(starts[k]);
        const to = k + 1 < starts.length ? Number(starts[k + 1]) : 65536;
        table.fill(ids[k], at + from, at + to);
      }
      table[at + PORT_UNKNOWN] = interner.intern(base);
    }
  });

  // Addresses, per family and direction.
  const addressDim = (family: 4 | 6, pick: (p: ParsedFlow) => AddressRange[]) => {
    const base = new Int32Array(W);
    const segments: Segment[] = [];
    parsed.forEach((p, f) => {
      const ranges = pick(p);
      if (ranges.length === 0) {
        setBit(base, f);
        return;
      }
      for (const r of ranges) {
        if (r.family === family) segments.push({ lo: r.lo, end: r.hi + 1n, flow: f });
      }
    });
    const bits = family === 4 ? 32n : 128n;
    const { starts, ids } = sweep(interner, base, segments, 1n << bits);
    const per = family === 4 ? 1 : 4;
    const out = new Int32Array(starts.length * per);
    starts.forEach((s, k) => {
      for (let w = 0; w < per; w++) {
        const shift = BigInt(32 * (per - 1 - w));
        out[k * per + w] = Number((s >> shift) & 0xffffffffn) ^ SIGN;
      }
    });
    return { starts: out, ids: Int32Array.from(ids) };
  };
  const d4 = addressDim(4, (p) => p.dsts);
  const s4 = addressDim(4, (p) => p.srcs);
  const d6 = addressDim(6, (p) => p.dsts);
  const s6 = addressDim(6, (p) => p.srcs);
  c.dst4Starts = d4.starts;
  c.dst4Ids = d4.ids;
  c.src4Starts = s4.starts;
  c.src4Ids = s4.ids;
  c.dst6Starts = d6.starts;
  c.dst6Ids = d6.ids;
  c.src6Starts = s6.starts;
  c.src6Ids = s6.ids;

  // The sets, frozen; member lists for the small ones.
  const sets = interner.counts.length;
  c.words = interner.words.slice(0, sets * W);
  c.counts = Int32Array.from(interner.counts);
  const SW = Math.ceil(W / 32);
  c.SW = SW;
  c.summaries = new Int32Array(sets * SW);
  for (let id = 0; id < sets; id++) {
    for (let w = 0; w < W; w++) {
      if (c.words[id * W + w] !== 0) c.summaries[id * SW + (w >> 5)] |= 1 << (w & 31);
    }
  }
  const listMax = Math.max(W, 8);
  c.listStart = new Int32Array(sets).fill(-1);
  let total = 0;
  for (let id = 0; id < sets; id++) if (c.counts[id] <= listMax) total += c.counts[id];
  c.lists = new Int32Array(total);
  let at = 0;
  for (let id = 0; id < sets; id++) {
    if (c.counts[id] > listMax) continue;
    c.listStart[id] = at;
    for (let w = 0; w < W; w++) {
      let x = c.words[id * W + w];
      while (x !== 0) {
        const low = x & -x;
        c.lists[at++] = (w << 5) + 31 - Math.clz32(low);
        x ^= low;
      }
    }
  }

  // Byte matches.
  c.termStart = new Int32Array(n * PROTOS + 1);
  const offs: number[] = [];
  const sizes: number[] = [];
  const masks: number[] = [];
  const values: number[] = [];
  for (let f = 0; f < n; f++) {
    for (let pi = 0; pi < PROTOS; pi++) {
      c.termStart[f * PROTOS + pi] = offs.length;
      for (const t of parsed[f].terms) {
        if (t.proto !== FLOW_PROTOCOLS[pi]) continue;
        offs.push(t.offset);
        sizes.push(t.size);
        masks.push(t.mask | 0);
        values.push(t.value | 0);
      }
    }
  }
  c.termStart[n * PROTOS] = offs.length;
  c.termOffset = Int32Array.from(offs);
  c.termSize = Int32Array.from(sizes);
  c.termMask = Int32Array.from(masks);
  c.termValue = Int32Array.from(values);
  c.encapPorts = encapPortsOf(parsed);
  return c;
}

/**
 * The flows' --udpencap ports. UDP to such a port is SCTP over UDP for the whole daemon,
 * so a flow that lists it among its UDP destination ports could never see that traffic:
 * an error.
 */
function encapPortsOf(parsed: readonly ParsedFlow[]): Uint16Array {
  const ports = new Map<number, string>();
  for (const p of parsed) if (p.spec.udpencap !== 0) ports.set(p.spec.udpencap, p.spec.name);
  for (const p of parsed) {
    if (!p.spec.protocols.includes("udp")) continue;
    for (const r of p.dports) {
      for (const [port, owner] of ports) {
        if (port >= r.lo && port <= r.hi) {
          throw new FlowError(
            `flow "${p.spec.name}" takes UDP port ${port}, which flow "${owner}" makes SCTP over UDP (--udpencap)`,
          );
        }
      }
    }
  }
  return Uint16Array.from([...ports.keys()].sort((a, b) => a - b));
}

/** The same compiled flows with every array in shared memory (for posting to workers). */
export function sharedFlows(c: CompiledFlows): CompiledFlows {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(c)) {
    if (ArrayBuffer.isView(value) && !(value.buffer instanceof SharedArrayBuffer)) {
      const typed = value as unknown as Uint8Array;
      const Ctor = typed.constructor as new (b: SharedArrayBuffer) => Uint8Array;
      const copy = new Ctor(new SharedArrayBuffer(typed.byteLength));
      copy.set(typed);
      out[key] = copy;
    } else {
      out[key] = value;
    }
  }
  return out as unknown as CompiledFlows;
}

function isCompiled(flows: readonly FlowSpec[] | CompiledFlows): flows is CompiledFlows {
  return !Array.isArray(flows);
}

/**
 * Compiled flows; rebuild (construct anew) when the flows change. match() updates the
 * scan cache, so an instance belongs to one thread; threads share the compiled data
 * (compileFlows once, then new FlowMatcher(compiled) in each).
 */
export class FlowMatcher {
  /** The flows as the matcher keeps them: priority descending, then name. */
  readonly flows: readonly FlowSpec[];
  /** Per flow index: 1 when its load balancer hashes on addresses only (no protocols). */
  readonly hashOnAddresses: Uint8Array;
  /** The flows' --udpencap ports: UDP to them is SCTP over UDP. */
  readonly encapPorts: Uint16Array;
  /** The data this matcher looks up (post it to share the matcher with another thread). */
  readonly compiled: CompiledFlows;
  private readonly promiscuousPing: boolean;
  private readonly n: number;
  private readonly W: number;
  private readonly words: Int32Array;
  private readonly counts: Int32Array;
  /** Words of a set's summary: bit j set when word j of the set is not zero. */
  private readonly SW: number;
  private readonly summaries: Int32Array;
  /** Per set id: start of its member list in `lists`, -1 when it keeps none. */
  private readonly listStart: Int32Array;
  private readonly lists: Int32Array;
  private readonly allId: number;
  private readonly anyProtoId: number;
  /** Per protocol: PORT_SLOTS set ids. */
  private readonly dportIds: Int32Array;
  private readonly sportIds: Int32Array;
  private readonly dst4Starts: Int32Array;
  private readonly dst4Ids: Int32Array;
  private readonly src4Starts: Int32Array;
  private readonly src4Ids: Int32Array;
  private readonly dst6Starts: Int32Array;
  private readonly dst6Ids: Int32Array;
  private readonly src6Starts: Int32Array;
  private readonly src6Ids: Int32Array;
  /** Byte-match terms of (flow f, protocol p) are termStart[f*3+p] .. termStart[f*3+p+1]. */
  private readonly termStart: Int32Array;
  private readonly termOffset: Int32Array;
  private readonly termSize: Int32Array;
  private readonly termMask: Int32Array;
  private readonly termValue: Int32Array;
  private readonly nameIndex: Map<string, number>;
  /** Scan cache: slot -> four set ids, and the first flow of their intersection. */
  private readonly cacheMask: number;
  private readonly cacheKeys: Int32Array;
  private readonly cacheFlows: Int32Array;

  /**
   * Validates every flow (as checkFlowSpec does) and compiles, or adopts flows compiled
   * already (compileFlows, possibly in another thread). Throws FlowError.
   */
  constructor(flows: readonly FlowSpec[] | CompiledFlows, options: FlowMatcherOptions = {}) {
    this.promiscuousPing = options.promiscuousPing === true;
    const entries = options.cacheEntries ?? 4096;
    const cacheSize = entries >= 1 ? 2 ** Math.floor(Math.log2(Math.min(entries, 1 << 20))) : 0;
    this.cacheMask = cacheSize - 1;
    this.cacheKeys = new Int32Array(cacheSize * 4).fill(-1);
    this.cacheFlows = new Int32Array(cacheSize);
    const c = isCompiled(flows) ? flows : compileFlows(flows);
    this.compiled = c;
    this.flows = c.flows;
    this.hashOnAddresses = c.hashOnAddresses;
    this.encapPorts = c.encapPorts;
    this.n = c.n;
    this.W = c.W;
    this.SW = c.SW;
    this.allId = c.allId;
    this.anyProtoId = c.anyProtoId;
    this.words = c.words;
    this.counts = c.counts;
    this.summaries = c.summaries;
    this.listStart = c.listStart;
    this.lists = c.lists;
    this.dportIds = c.dportIds;
    this.sportIds = c.sportIds;
    this.dst4Starts = c.dst4Starts;
    this.dst4Ids = c.dst4Ids;
    this.src4Starts = c.src4Starts;
    this.src4Ids = c.src4Ids;
    this.dst6Starts = c.dst6Starts;
    this.dst6Ids = c.dst6Ids;
    this.src6Starts = c.src6Starts;
    this.src6Ids = c.src6Ids;
    this.termStart = c.termStart;
    this.termOffset = c.termOffset;
    this.termSize = c.termSize;
    this.termMask = c.termMask;
    this.termValue = c.termValue;
    this.nameIndex = new Map(c.flows.map((f, i) => [f.name, i]));
  }

  /** Index in `flows` of the flow named `name`, or -1. */
  indexOf(name: string): number {
    return this.nameIndex.get(name) ?? -1;
  }

  /** Sizes of the compiled structure (for logs and traces). */
  describe(): {
    flows: number;
    sets: number;
    words: number;
    intervals4: number;
    intervals6: number;
  } {
    return {
      flows: this.n,
      sets: this.counts.length,
      words: this.W,
      intervals4: this.dst4Ids.length + this.src4Ids.length,
      intervals6: this.dst6Ids.length + this.src6Ids.length,
    };
  }

  /**
   * Index into `flows` of the best flow for the classified packet, or -1 (also for an
   * invalid packet). `info` is classify()'s result for `buf`; an ICMP error is matched as
   * the flow it quotes (classify() already swapped it), and its byte matches read the
   * quoted L4 header as quoted. ICMP echo (request or reply) matches only flows without
   * protocols, or with promiscuousPing any flow whose addresses match. No allocation, no
   * exceptions.
   */
  match(info: PacketInfo, buf: Uint8Array): number {
    if (this.n === 0 || info.invalid !== 0) return -1;
    let dst: number;
    let src: number;
    const family = info.family;
    if (family === 4) {
      dst = this.dst4Ids[search4(this.dst4Starts, word4(info.dst, 0))];
      src = this.src4Ids[search4(this.src4Starts, word4(info.src, 0))];
    } else if (family === 6) {
      const d = info.dst;
      const s = info.src;
      dst =
        this.dst6Ids[search6(this.dst6Starts, word4(d, 0), word4(d, 4), word4(d, 8), word4(d, 12))];
      src =
        this.src6Ids[search6(this.src6Starts, word4(s, 0), word4(s, 4), word4(s, 8), word4(s, 12))];
    } else {
      return -1;
    }
    const proto = info.proto;
    let pi = -1;
    if (proto === IpProto.TCP) pi = 0;
    else if (proto === IpProto.UDP) pi = 1;
    else if (proto === IpProto.SCTP) pi = 2;
    let dp: number;
    let sp: number;
    if (pi >= 0) {
      const at = pi * PORT_SLOTS;
      // A key without ports (later fragment, or an error quoting one): ports unknown.
      if (info.hashMode === HashMode.Addresses) {
        dp = this.dportIds[at + PORT_UNKNOWN];
        sp = this.sportIds[at + PORT_UNKNOWN];
      } else {
        dp = this.dportIds[at + info.dport];
        sp = this.sportIds[at + info.sport];
      }
    } else {
      sp = this.allId;
      dp = this.anyProtoId;
      if (this.promiscuousPing && !info.icmpError) {
        const t = info.icmpType;
        if (
          (proto === IpProto.ICMP && (t === 8 || t === 0)) ||
          (proto === IpProto.ICMPv6 && (t === 128 || t === 129))
        ) {
          dp = this.allId;
        }
      }
    }
    return this.first(dst, src, dp, sp, pi, info, buf);
  }

  /** The first flow in all four sets whose byte matches (for protocol pi) pass. */
  private first(
    a: number,
    b: number,
    c: number,
    d: number,
    pi: number,
    info: PacketInfo,
    buf: Uint8Array,
  ): number {
    const counts = this.counts;
    // The two smallest sets: m1 drives the walk, m2 filters first.
    let m1 = a;
    let m2 = b;
    if (counts[b] < counts[a]) {
      m1 = b;
      m2 = a;
    }
    if (counts[c] < counts[m2]) {
      if (counts[c] < counts[m1]) {
        m2 = m1;
        m1 = c;
      } else {
        m2 = c;
      }
    }
    if (counts[d] < counts[m2]) {
      if (counts[d] < counts[m1]) {
        m2 = m1;
        m1 = d;
      } else {
        m2 = d;
      }
    }
    const size = counts[m1];
    if (size === 0) return -1;
    const words = this.words;
    const W = this.W;
    const oa = a * W;
    const ob = b * W;
    const oc = c * W;
    const od = d * W;
    const ls = this.listStart[m1];
    if (ls >= 0) {
      const lists = this.lists;
      const end = ls + size;
      for (let i = ls; i < end; i++) {
        const f = lists[i];
        const w = f >> 5;
        if (
          (words[oa + w] & words[ob + w] & words[oc + w] & words[od + w] & (1 << (f & 31))) !== 0 &&
          (pi < 0 || this.bytesMatch(f, pi, info, buf))
        ) {
          return f;
        }
      }
      return -1;
    }
    // The scan below costs up to W words; its answer depends on the four set ids only
    // (byte matches aside), so it is remembered in a small direct-mapped cache.
    const cache = this.cacheMask;
    let slot = -1;
    if (cache >= 0) {
      slot =
        (Math.imul(a, 0x9e3779b1) ^ Math.imul(b, 0x85ebca6b) ^ Math.imul(c, 0xc2b2ae35) ^ d) &
        cache;
      const k = slot << 2;
      const keys = this.cacheKeys;
      if (keys[k] === a && keys[k + 1] === b && keys[k + 2] === c && keys[k + 3] === d) {
        const f = this.cacheFlows[slot];
        // With byte matches to check, fall through to the scan (it continues past f).
        if (
          f < 0 ||
          pi < 0 ||
          this.termStart[f * PROTOS + pi] === this.termStart[f * PROTOS + pi + 1]
        ) {
          return f;
        }
        slot = -1;
      }
    }
    const found = this.scan(m1, m2, oa, ob, oc, od, pi, info, buf);
    if (slot >= 0) {
      const k = slot << 2;
      const keys = this.cacheKeys;
      keys[k] = a;
      keys[k + 1] = b;
      keys[k + 2] = c;
      keys[k + 3] = d;
      this.cacheFlows[slot] = scanFirst;
    }
    return found;
  }

  /**
   * Word-wise AND of the four sets (offsets oa..od), visiting only the words where both
   * smallest sets m1, m2 have flows (their summaries ANDed). Returns the first flow that
   * passes its byte matches; leaves in scanFirst the first flow of the intersection.
   */
  private scan(
    m1: number,
    m2: number,
    oa: number,
    ob: number,
    oc: number,
    od: number,
    pi: number,
    info: PacketInfo,
    buf: Uint8Array,
  ): number {
    const words = this.words;
    const W = this.W;
    const SW = this.SW;
    const sums = this.summaries;
    const s1 = m1 * SW;
    const s2 = m2 * SW;
    const o1 = m1 * W;
    const o2 = m2 * W;
    scanFirst = -1;
    for (let sw = 0; sw < SW; sw++) {
      let s = sums[s1 + sw] & sums[s2 + sw];
      while (s !== 0) {
        const lowS = s & -s;
        s ^= lowS;
        const w = (sw << 5) + 31 - Math.clz32(lowS);
        let x = words[o1 + w] & words[o2 + w];
        if (x === 0) continue;
        x &= words[oa + w] & words[ob + w] & words[oc + w] & words[od + w];
        while (x !== 0) {
          const low = x & -x;
          const f = (w << 5) + 31 - Math.clz32(low);
          if (scanFirst < 0) scanFirst = f;
          if (pi < 0 || this.bytesMatch(f, pi, info, buf)) return f;
          x ^= low;
        }
      }
    }
    return -1;
  }

  private bytesMatch(f: number, pi: number, info: PacketInfo, buf: Uint8Array): boolean {
    const k = f * PROTOS + pi;
    let t = this.termStart[k];
    const end = this.termStart[k + 1];
    if (t === end) return true;
    const base = info.l4Offset;
    if (base < 0) return false;
    let avail = info.l4Length;
    if (base + avail > buf.length) avail = buf.length - base;
    for (; t < end; t++) {
      const o = this.termOffset[t];
      const size = this.termSize[t];
      if (o + size > avail) return false;
      const p = base + o;
      let v: number;
      if (size === 1) v = buf[p];
      else if (size === 2) v = (buf[p] << 8) | buf[p + 1];
      else v = (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3];
      if ((v & this.termMask[t]) !== this.termValue[t]) return false;
    }
    return true;
  }
}
