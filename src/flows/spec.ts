// Flow definitions: parsing, validation and normalisation. A flow is a set of 5-tuples
// (protocols, source and destination CIDR sets, source and destination port ranges,
// optional byte matches on the L4 header) mapped to a named load balancer, with a
// priority. Pure: no I/O, no clock.
//
// Decisions (documented for the CLI and the daemon):
// - Every list is comma-separated; an empty item (leading, trailing or doubled comma) is
//   an error. Protocols, CIDRs and ports are normalised: protocols deduplicated in the
//   order tcp, udp, sctp; CIDRs get their host bits cleared (10.0.0.5/24 -> 10.0.0.0/24,
//   as iptables does), overlapping and adjacent ones are merged into the fewest CIDRs,
//   IPv4 before IPv6, always with a prefix length (10.0.0.1 -> 10.0.0.1/32); port ranges
//   are sorted and merged ("80" or "1000-2000").
// - Empty protocols = any protocol (the load balancer hashes on addresses only, see
//   hashesOnAddresses()); ports and byte matches then are errors: they need protocols.
// - A byte match names its protocol (`tcp[13:1] & 0x02 = 0x02`), which must be among
//   the flow's protocols: the protocols are never inferred from the match. A packet is
//   checked against the terms naming its own protocol only, so `protocols tcp,udp` with
//   `tcp[13:1] & 0x02 = 0x02` takes TCP SYNs and all UDP. Terms are ANDed.
// - Byte-match syntax (tcpdump's): `proto[offset:size] [& mask] = value`, proto tcp, udp
//   or sctp; `proto[offset]` means size 1; `==` is accepted for `=`, no other operator.
//   Sizes 1, 2, 4; offset 0..59 from the start of the L4 header; numbers decimal or 0x
//   hex and within the size; a mask of 0, a value with bits outside its mask or two
//   terms that want different bits in the same place never match and are errors.
//   Normalised form: `tcp[2:2] = 5001` without a mask, `tcp[12:2] & 0x01ff = 0x0002`
//   with one (hex, two digits per byte); a mask covering the whole size is dropped;
//   terms sorted (protocol, offset, size) and deduplicated, joined by ", ".
// - Priority: an integer in the 32-bit signed range, default 0; higher wins, ties are
//   broken by name (code-unit order), so the order is total and deterministic.
// - udpencap: 0 (off) or a UDP port 1..65535; it needs sctp among the protocols.
// - A flow whose destination and source CIDRs share no address family is an error: it
//   could never match.
import ipaddr from "ipaddr.js";
import { rethrowAs } from "../domain/errors.js";
import { LB_NAME_PATTERN, LB_NAME_RULE } from "../domain/names.js";
import {
  formatPortRange,
  mergePortRanges,
  type PortRange,
  parsePortList,
} from "../domain/ports.js";

export type { PortRange };

export type FlowProtocol = "tcp" | "udp" | "sctp";

/** The protocols a flow can name, in canonical order (also the matcher's table order). */
export const FLOW_PROTOCOLS: readonly FlowProtocol[] = ["tcp", "udp", "sctp"];

/** IP protocol numbers of FLOW_PROTOCOLS, same order. */
export const FLOW_PROTOCOL_NUMBERS: readonly number[] = [6, 17, 132];

export interface FlowSpec {
  /** [A-Za-z0-9_.-]{1,64} */
  name: string;
  /** Load balancer (state) name (src/domain/names.ts). */
  target: string;
  /** Integer, higher wins; ties broken by name. */
  priority: number;
  /** Empty = any protocol (the LB then balances on addresses only). */
  protocols: FlowProtocol[];
  /** Canonical CIDRs, IPv4 then IPv6; empty = any. */
  dsts: string[];
  srcs: string[];
  /** "80" or "1000-2000", sorted and merged; empty = any. */
  dports: string[];
  sports: string[];
  /** "" or normalised byte matches, ", "-separated. */
  match: string;
  /** 0 or the UDP port of SCTP over UDP for this flow (carried for the daemon). */
  udpencap: number;
}

export class FlowError extends Error {
  override name = "FlowError";
}

export interface FlowInput {
  name: string;
  target: string;
  priority?: string | number;
  protocols?: string;
  dsts?: string;
  srcs?: string;
  dports?: string;
  sports?: string;
  match?: string;
  udpencap?: string | number;
}

/** An inclusive address range of one family (the value of a CIDR). */
export interface AddressRange {
  family: 4 | 6;
  lo: bigint;
  hi: bigint;
}

/** One byte-match term; `mask` and `value` are unsigned and fit in `size` bytes. */
export interface ByteMatch {
  proto: FlowProtocol;
  offset: number;
  size: 1 | 2 | 4;
  mask: number;
  value: number;
}

/** A flow with its dimensions as ranges and terms: what the matcher compiles. */
export interface ParsedFlow {
  spec: FlowSpec;
  dsts: AddressRange[];
  srcs: AddressRange[];
  dports: PortRange[];
  sports: PortRange[];
  terms: ByteMatch[];
}

export const FLOW_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/** A flow's target is a load balancer name. */
export const TARGET_NAME_PATTERN = LB_NAME_PATTERN;
export const PRIORITY_MIN = -2147483648;
export const PRIORITY_MAX = 2147483647;
/** Largest byte-match offset: the TCP header is at most 60 bytes. */
export const MATCH_MAX_OFFSET = 59;

/** True when the flow's load balancer hashes on addresses only (no protocols given). */
export function hashesOnAddresses(flow: FlowSpec): boolean {
  return flow.protocols.length === 0;
}

/** Matcher order: priority descending, then name (code-unit order, not locale). */
export function compareFlows(a: FlowSpec, b: FlowSpec): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * A flow from CLI strings (comma-separated lists), validated and normalised.
 * Throws FlowError naming the field and the bad part.
 */
export function parseFlow(input: FlowInput): FlowSpec {
  return analyseFlow(input).spec;
}

/** parseFlow, also returning the parsed ranges and terms (for the matcher). */
export function analyseFlow(input: FlowInput): ParsedFlow {
  const name = input.name;
  if (typeof name !== "string" || !FLOW_NAME_PATTERN.test(name)) {
    throw new FlowError(
      `flow name ${quote(name)} is invalid: 1-64 characters from A-Z a-z 0-9 _ . -`,
    );
  }
  const target = input.target;
  if (typeof target !== "string" || !TARGET_NAME_PATTERN.test(target)) {
    throw new FlowError(
      `target ${quote(target)} is invalid: a load balancer name, ${LB_NAME_RULE}`,
    );
  }
  const priority = parsePriority(input.priority);
  const protocols = parseProtocols(input.protocols);
  const dsts = parseAddresses("dsts", input.dsts);
  const srcs = parseAddresses("srcs", input.srcs);
  const dports = parsePorts("dports", input.dports);
  const sports = parsePorts("sports", input.sports);
  for (const [field, list] of [
    ["dports", dports],
    ["sports", sports],
  ] as const) {
    if (list.length > 0 && protocols.length === 0) {
      throw new FlowError(
        `${field} need protocols (tcp, udp or sctp): a flow without protocols has no ports`,
      );
    }
  }
  if (dsts.length > 0 && srcs.length > 0) {
    const fams = (l: AddressRange[]) => new Set(l.map((r) => r.family));
    const d = fams(dsts);
    const s = fams(srcs);
    if (![...d].some((f) => s.has(f))) {
      throw new FlowError(
        `dsts (IPv${[...d][0]} only) and srcs (IPv${[...s][0]} only) share no address ` +
          "family: the flow could never match",
      );
    }
  }
  const terms = parseMatch(input.match, protocols);
  const udpencap = parseUdpEncap(input.udpencap);
  if (udpencap !== 0 && !protocols.includes("sctp")) {
    throw new FlowError(`udpencap ${udpencap} needs sctp among the protocols`);
  }
  const spec: FlowSpec = {
    name,
    target,
    priority,
    protocols,
    dsts: formatAddressRanges(dsts),
    srcs: formatAddressRanges(srcs),
    dports: dports.map(formatPortRange),
    sports: sports.map(formatPortRange),
    match: terms.map(formatByteMatch).join(", "),
    udpencap,
  };
  return { spec, dsts, srcs, dports, sports, terms };
}

/**
 * Validates a flow read back from storage (JSON: untrusted shape) and returns it
 * normalised; the same checks as parseFlow. Throws FlowError.
 */
export function checkFlowSpec(value: unknown): FlowSpec {
  return analyseFlow(flowInputOf(value)).spec;
}

/** The FlowInput that reproduces a stored flow (lists joined with commas). */
export function flowInputOf(value: unknown): FlowInput {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FlowError("a flow must be an object");
  }
  const v = value as Record<string, unknown>;
  const name = v.name;
  const where = typeof name === "string" ? `flow "${name}": ` : "flow: ";
  const str = (k: string): string => {
    const x = v[k];
    if (typeof x !== "string") throw new FlowError(`${where}${k} must be a string`);
    return x;
  };
  const list = (k: string): string => {
    const x = v[k];
    if (x === undefined) return "";
    if (!Array.isArray(x) || !x.every((e) => typeof e === "string")) {
      throw new FlowError(`${where}${k} must be an array of strings`);
    }
    if (x.some((e) => e.includes(","))) throw new FlowError(`${where}${k}: an item holds a comma`);
    return x.join(",");
  };
  const num = (k: string): number | undefined => {
    const x = v[k];
    if (x === undefined) return undefined;
    if (typeof x !== "number") throw new FlowError(`${where}${k} must be a number`);
    return x;
  };
  const match = v.match === undefined ? "" : str("match");
  const input: FlowInput = {
    name: str("name"),
    target: str("target"),
    protocols: list("protocols"),
    dsts: list("dsts"),
    srcs: list("srcs"),
    dports: list("dports"),
    sports: list("sports"),
    match,
  };
  const priority = num("priority");
  if (priority !== undefined) input.priority = priority;
  const udpencap = num("udpencap");
  if (udpencap !== undefined) input.udpencap = udpencap;
  return input;
}

// ---- fields ----

function quote(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** Comma-separated items, trimmed; "" or undefined -> []; an empty item is an error. */
function splitList(field: string, text: string | undefined): string[] {
  if (text === undefined) return [];
  if (typeof text !== "string") throw new FlowError(`${field} must be a string`);
  if (text.trim() === "") return [];
  const items = text.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) {
    throw new FlowError(
      `${field}: empty item in ${JSON.stringify(text)} (leading, trailing or doubled comma)`,
    );
  }
  return items;
}

function parsePriority(p: string | number | undefined): number {
  if (p === undefined) return 0;
  let n: number;
  if (typeof p === "number") {
    n = p;
  } else if (typeof p === "string") {
    const t = p.trim();
    if (t === "") return 0;
    if (!/^[+-]?\d+$/.test(t)) throw new FlowError(`priority ${quote(p)} is not an integer`);
    n = Number(t);
  } else {
    throw new FlowError(`priority ${quote(p)} is not an integer`);
  }
  if (!Number.isInteger(n)) throw new FlowError(`priority ${quote(p)} is not an integer`);
  if (n < PRIORITY_MIN || n > PRIORITY_MAX) {
    throw new FlowError(`priority ${quote(p)} is out of range (${PRIORITY_MIN}..${PRIORITY_MAX})`);
  }
  return n === 0 ? 0 : n; // no -0
}

function parseProtocols(text: string | undefined): FlowProtocol[] {
  const seen = new Set<FlowProtocol>();
  for (const item of splitList("protocols", text)) {
    const p = item.toLowerCase();
    if (p !== "tcp" && p !== "udp" && p !== "sctp") {
      throw new FlowError(`protocols: unknown protocol ${JSON.stringify(item)} (tcp, udp or sctp)`);
    }
    seen.add(p);
  }
  return FLOW_PROTOCOLS.filter((p) => seen.has(p));
}

function parseUdpEncap(v: string | number | undefined): number {
  if (v === undefined) return 0;
  let n: number;
  if (typeof v === "number") {
    n = v;
  } else if (typeof v === "string") {
    const t = v.trim();
    if (t === "") return 0;
    if (!/^\d+$/.test(t)) throw new FlowError(`udpencap ${quote(v)} is not a UDP port`);
    n = Number(t);
  } else {
    throw new FlowError(`udpencap ${quote(v)} is not a UDP port`);
  }
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new FlowError(`udpencap ${quote(v)} is not a UDP port (1..65535, or 0 for off)`);
  }
  return n;
}

// ---- addresses ----

function bytesToBigInt(bytes: readonly number[]): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

function parseAddressItem(field: string, item: string): AddressRange {
  const slash = item.indexOf("/");
  const text = slash < 0 ? item : item.slice(0, slash);
  const inItem = slash < 0 ? "" : ` in ${JSON.stringify(item)}`;
  let family: 4 | 6;
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) family = 4;
  else if (text.includes(":") && !text.includes("%") && ipaddr.IPv6.isValid(text)) family = 6;
  else throw new FlowError(`${field}: bad address ${JSON.stringify(text)}${inItem}`);
  const bits = family === 4 ? 32 : 128;
  let len = bits;
  if (slash >= 0) {
    const t = item.slice(slash + 1);
    if (!/^\d{1,3}$/.test(t)) {
      throw new FlowError(`${field}: bad CIDR ${JSON.stringify(item)}: bad prefix length`);
    }
    len = Number(t);
    if (len > bits) {
      throw new FlowError(
        `${field}: bad CIDR ${JSON.stringify(item)}: prefix length ${len} is above ${bits}`,
      );
    }
  }
  const value = bytesToBigInt(ipaddr.parse(text).toByteArray());
  const host = (1n << BigInt(bits - len)) - 1n;
  return { family, lo: value & ~host, hi: value | host };
}

/** Sorts and merges overlapping or adjacent ranges (per family, IPv4 first). */
export function mergeAddressRanges(ranges: readonly AddressRange[]): AddressRange[] {
  const sorted = [...ranges].sort((a, b) =>
    a.family !== b.family ? a.family - b.family : a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0,
  );
  const out: AddressRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.lo <= last.hi + 1n) {
      if (r.hi > last.hi) last.hi = r.hi;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

function parseAddresses(field: string, text: string | undefined): AddressRange[] {
  return mergeAddressRanges(splitList(field, text).map((i) => parseAddressItem(field, i)));
}

function formatAddress(family: 4 | 6, v: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => Number((v >> s) & 0xffn)).join(".");
  }
  const parts: number[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) parts.push(Number((v >> s) & 0xffffn));
  return new ipaddr.IPv6(parts).toRFC5952String();
}

/** Merged ranges -> the fewest CIDRs covering exactly them. */
function formatAddressRanges(ranges: readonly AddressRange[]): string[] {
  const out: string[] = [];
  for (const r of ranges) {
    const bits = r.family === 4 ? 32 : 128;
    let lo = r.lo;
    while (lo <= r.hi) {
      // The largest aligned block at lo that does not pass hi.
      let size = 0;
      while (size < bits) {
        const next = 1n << BigInt(size + 1);
        if ((lo & (next - 1n)) !== 0n || lo + next - 1n > r.hi) break;
        size++;
      }
      out.push(`${formatAddress(r.family, lo)}/${bits - size}`);
      lo += 1n << BigInt(size);
    }
  }
  return out;
}

// ---- ports ----

/** Port 0 may appear in packets, so flows may match it; sorted and merged. */
function parsePorts(field: string, text: string | undefined): PortRange[] {
  if (text !== undefined && typeof text !== "string")
    throw new FlowError(`${field} must be a string`);
  return mergePortRanges(
    rethrowAs(FlowError, () => parsePortList(text, { field, allowZero: true })),
  );
}

// ---- byte matches ----

/** Parses a match expression against the flow's protocols. "" -> []. */
export function parseMatch(
  text: string | undefined,
  protocols: readonly FlowProtocol[],
): ByteMatch[] {
  if (text === undefined) return [];
  if (typeof text !== "string") throw new FlowError("match must be a string");
  if (text.trim() === "") return [];
  const terms: ByteMatch[] = [];
  const written: string[] = [];
  for (const raw of text.split(",")) {
    const t = raw.trim();
    if (t === "") {
      throw new FlowError(
        `match: empty term in ${JSON.stringify(text)} (leading, trailing or doubled comma)`,
      );
    }
    const term = parseTerm(t);
    if (!protocols.includes(term.proto)) {
      const have =
        protocols.length === 0 ? "none: byte matches need protocols" : protocols.join(", ");
      throw new FlowError(
        `match: ${JSON.stringify(t)}: ${term.proto} is not among the flow's protocols (${have})`,
      );
    }
    terms.push(term);
    written.push(t);
  }
  checkContradictions(terms, written);
  const order = (p: FlowProtocol) => FLOW_PROTOCOLS.indexOf(p);
  const sorted = terms
    .map((term) => ({ term, key: formatByteMatch(term) }))
    .sort(
      (a, b) =>
        order(a.term.proto) - order(b.term.proto) ||
        a.term.offset - b.term.offset ||
        a.term.size - b.term.size ||
        (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
    );
  const out: ByteMatch[] = [];
  let prev = "";
  for (const s of sorted) {
    if (s.key !== prev) out.push(s.term);
    prev = s.key;
  }
  return out;
}

/** A little scanner over one term, for errors that say what was expected where. */
class Scanner {
  pos = 0;
  constructor(readonly text: string) {}
  skipSpace(): void {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos])) this.pos++;
  }
  peek(): string {
    this.skipSpace();
    return this.text[this.pos] ?? "";
  }
  /** A run of [0-9A-Za-z] (a number or a word), or "" if none here. */
  word(): string {
    this.skipSpace();
    const m = /^[0-9A-Za-z]+/.exec(this.text.slice(this.pos));
    if (!m) return "";
    this.pos += m[0].length;
    return m[0];
  }
  rest(): string {
    return this.text.slice(this.pos).trim();
  }
}

function parseTerm(t: string): ByteMatch {
  const fail: (why: string) => never = (why) => {
    throw new FlowError(`match: ${JSON.stringify(t)}: ${why}`);
  };
  const s = new Scanner(t);
  const word = s.word();
  if (!/^[A-Za-z]+$/.test(word)) {
    fail("expected proto[offset:size] = value, proto tcp, udp or sctp");
  }
  const proto = word.toLowerCase();
  if (proto !== "tcp" && proto !== "udp" && proto !== "sctp") {
    fail(`unknown protocol ${JSON.stringify(word)} (tcp, udp or sctp)`);
  }
  if (s.peek() !== "[") fail(`expected "[" after ${JSON.stringify(word)}`);
  s.pos++;
  const offText = s.word();
  if (offText === "") fail('expected an offset after "["');
  const offset = parseNumber(offText, "offset", fail);
  let size = 1;
  if (s.peek() === ":") {
    s.pos++;
    const sizeText = s.word();
    if (sizeText === "") fail('expected a size (1, 2 or 4) after ":"');
    size = parseNumber(sizeText, "size", fail);
  }
  if (s.peek() !== "]") fail(`expected "]" after the offset${size === 1 ? "" : " and size"}`);
  s.pos++;
  if (offset > MATCH_MAX_OFFSET) fail(`offset ${offset} is above ${MATCH_MAX_OFFSET}`);
  if (size !== 1 && size !== 2 && size !== 4) fail(`size ${size} is not 1, 2 or 4`);
  const sz = size as 1 | 2 | 4;
  const max = sz === 4 ? 0xffffffff : (1 << (8 * sz)) - 1;
  const fits = (what: string, text: string, v: number) => {
    if (v > max)
      fail(`${what} ${text} does not fit in ${sz} byte${sz === 1 ? "" : "s"} (max ${max})`);
  };
  let mask = max;
  let c = s.peek();
  if (c === "&") {
    s.pos++;
    const mt = s.word();
    if (mt === "") fail('expected a mask after "&"');
    mask = parseNumber(mt, "mask", fail);
    fits("mask", mt, mask);
    if (mask === 0) fail("mask 0 matches every packet");
    c = s.peek();
  }
  if (c !== "=") {
    const upTo = t.slice(0, s.pos).trim();
    if (c === "") fail(`missing "= value" after ${JSON.stringify(upTo)}`);
    if (c === "!" || c === "<" || c === ">") fail('only "=" is supported');
    fail(`missing "=" between ${JSON.stringify(upTo)} and ${JSON.stringify(s.rest())}`);
  }
  s.pos++;
  if (s.text[s.pos] === "=") s.pos++; // "==", as tcpdump allows
  const vt = s.word();
  if (vt === "") fail('expected a value after "="');
  const value = parseNumber(vt, "value", fail);
  fits("value", vt, value);
  if (s.rest() !== "") fail(`unexpected ${JSON.stringify(s.rest())} after the value`);
  if ((value & ~mask) >>> 0 !== 0) {
    fail(`value ${vt} has bits outside the mask ${hex(mask, sz)}: never matches`);
  }
  return { proto, offset, size: sz, mask, value };
}

function parseNumber(text: string, what: string, fail: (why: string) => never): number {
  let n: number;
  if (/^0[xX][0-9A-Fa-f]+$/.test(text)) n = Number.parseInt(text.slice(2), 16);
  else if (/^\d+$/.test(text)) n = Number(text);
  else return fail(`bad ${what} ${JSON.stringify(text)} (decimal or 0x hex)`);
  return n; // range checks (and their messages, with the text as written) are the caller's
}

function hex(v: number, size: number): string {
  return `0x${v.toString(16).padStart(2 * size, "0")}`;
}

/** Two terms that require different values of the same bit never match together. */
function checkContradictions(terms: readonly ByteMatch[], written: readonly string[]): void {
  const want = new Map<string, { mask: number; value: number; term: number }[]>();
  terms.forEach((t, i) => {
    for (let b = 0; b < t.size; b++) {
      const shift = 8 * (t.size - 1 - b);
      const m = Math.floor(t.mask / 2 ** shift) & 0xff;
      const v = Math.floor(t.value / 2 ** shift) & 0xff;
      if (m === 0) continue;
      const key = `${t.proto}:${t.offset + b}`;
      const list = want.get(key) ?? [];
      for (const o of list) {
        if ((o.mask & m & (o.value ^ v)) !== 0) {
          throw new FlowError(
            `match: ${JSON.stringify(written[i])} contradicts ${JSON.stringify(written[o.term])}: never matches`,
          );
        }
      }
      list.push({ mask: m, value: v, term: i });
      want.set(key, list);
    }
  });
}

export function formatByteMatch(t: ByteMatch): string {
  const full = t.size === 4 ? 0xffffffff : (1 << (8 * t.size)) - 1;
  const head = `${t.proto}[${t.offset}:${t.size}]`;
  if (t.mask === full) return `${head} = ${t.value}`;
  return `${head} & ${hex(t.mask, t.size)} = ${hex(t.value, t.size)}`;
}
