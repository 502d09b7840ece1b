// Ports and port lists ("80,443,8000-8100"): one parser, one range type for the setup's
// --ports and the flows' dports/sports.
//
// Port 0 exists on the wire (a flow may match packets that carry it), but no service
// listens on it: a setup's --ports refuses it (`allowZero: false`), flows accept it.
import { DomainError } from "./errors.js";

export const MAX_PORT = 65535;

/** An inclusive port range; a single port has lo === hi. */
export interface PortRange {
  lo: number;
  hi: number;
}

export interface PortListRule {
  /** Named in messages: "dports: port 70000 is above 65535". */
  field: string;
  /** Accept port 0 (packet matching) or not (service ports). */
  allowZero: boolean;
}

function fail(rule: PortListRule, why: string): never {
  throw new DomainError(`${rule.field}: ${why}`);
}

function portNumber(text: string, rule: PortListRule): number {
  const n = Number(text);
  if (n > MAX_PORT) fail(rule, `port ${text} is above ${MAX_PORT}`);
  if (n === 0 && !rule.allowZero) fail(rule, `port 0 is not a service port (1..${MAX_PORT})`);
  return n;
}

/**
 * "80, 443,8000-8100" -> [{80,80},{443,443},{8000,8100}], in the order given ("" or
 * undefined -> []). Items are trimmed; an empty item, a bad number or a reversed range is
 * a DomainError naming the field and the item.
 */
export function parsePortList(text: string | undefined, rule: PortListRule): PortRange[] {
  if (text === undefined || text.trim() === "") return [];
  const items = text.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) {
    fail(rule, `empty item in ${JSON.stringify(text)} (leading, trailing or doubled comma)`);
  }
  return items.map((item) => {
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(item);
    if (!m) {
      fail(
        rule,
        `bad port or range ${JSON.stringify(item)} (a port ${rule.allowZero ? 0 : 1}..${MAX_PORT} or a range like 1000-2000)`,
      );
    }
    const lo = portNumber(m[1], rule);
    const hi = m[2] === undefined ? lo : portNumber(m[2], rule);
    if (lo > hi) fail(rule, `bad range ${JSON.stringify(item)}: ${lo} is above ${hi}`);
    return { lo, hi };
  });
}

/** Sorted by lo, overlapping and adjacent ranges merged: the canonical form of a set. */
export function mergePortRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = ranges.map((r) => ({ ...r })).sort((a, b) => a.lo - b.lo);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.lo <= last.hi + 1) last.hi = Math.max(last.hi, r.hi);
    else out.push(r);
  }
  return out;
}

/** "80" or "1000-2000". */
export function formatPortRange(r: PortRange): string {
  return r.lo === r.hi ? String(r.lo) : `${r.lo}-${r.hi}`;
}
