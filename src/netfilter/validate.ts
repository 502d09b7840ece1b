// Validation and normalisation of a SetupSpec. Pure: no I/O, so --dry-run and the unit
// tests see exactly what setup() would apply.
import ipaddr from "ipaddr.js";
import {
  type Addr,
  canonicalAddress,
  type Family,
  familyOf,
  parseAddress,
} from "../domain/address.js";
import { rethrowAs } from "../domain/errors.js";
import { isFwmark, MAX_FWMARK } from "../domain/fwmark.js";
import { LB_NAME_PATTERN, LB_NAME_RULE } from "../domain/names.js";
import { type PortRange, parsePortList } from "../domain/ports.js";
import { isWeight, MAX_WEIGHT } from "../domain/weight.js";
import {
  FRAGMENT_MARK,
  SetupError,
  type SetupFragments,
  type SetupProtocol,
  type SetupSpec,
  type SetupTierPeer,
} from "./types.js";

export { canonicalAddress, type Family, type PortRange, parseAddress };

export interface NormalizedTarget {
  fwmark: number;
  /** Canonical text form (RFC 5952 for IPv6), as nft and iptables print it. */
  address: string;
  weight: number;
}

export interface NormalizedSpec {
  name: string;
  mode: SetupSpec["mode"];
  family: Family;
  /** Canonical CIDRs, e.g. "10.0.0.1/32". */
  vips: string[];
  targets: NormalizedTarget[];
  queue: { first: number; last: number };
  queueBypass: boolean;
  synOnly: boolean;
  /** Effective protocols: [] = all; ports without protocols mean tcp, udp and sctp. */
  protocols: SetupProtocol[];
  /** [] = all ports. */
  ports: PortRange[];
  statistic: "nth" | "random";
  snat: boolean;
  rulePriority: number;
  /** dsr --fragments; absent without. */
  fragments?: SetupFragments;
  /** dsr --fragments --tier-peer: the other instances of the tier ([] = none). */
  tierPeers: NormalizedPeer[];
}

export interface NormalizedPeer {
  fwmark: number;
  /** Canonical text form, as for targets. */
  address: string;
}

/** A setup's name is a load balancer name (src/domain/names.ts). */
export const NAME_PATTERN = LB_NAME_PATTERN;
const PROTOCOLS: readonly SetupProtocol[] = ["tcp", "udp", "sctp"];
/** nth with weights needs one rule per slot of the (gcd-reduced) weight sum. */
export const MAX_NTH_SLOTS = 1000;
export const DEFAULT_RULE_PRIORITY = 1000;
/**
 * A network device name the kernel accepts (dev_valid_name: < IFNAMSIZ bytes, not "." or
 * "..", no "/", ":" or whitespace), printable ASCII, and without "%", which TUNSETIFF
 * would take as a template for a free number.
 */
export const TUN_NAME_PATTERN = /^(?!\.\.?$)[!-~]{1,15}$/;
const TUN_NAME_FORBIDDEN = /[/:%]/;

export function validTunName(name: unknown): name is string {
  return typeof name === "string" && TUN_NAME_PATTERN.test(name) && !TUN_NAME_FORBIDDEN.test(name);
}

/** Routing tables 253-255 are default/main/local: a dsr fwmark must not name them. */
const RESERVED_TABLES = new Set([253, 254, 255]);

function parseVip(text: string, errors: string[]): [Addr, number] | undefined {
  const [addrText, lenText, extra] = String(text).split("/");
  const addr = parseAddress(addrText ?? "");
  if (!addr || extra !== undefined) {
    errors.push(`VIP "${text}" is not an IPv4/IPv6 address or CIDR`);
    return undefined;
  }
  const bits = addr.kind() === "ipv4" ? 32 : 128;
  let len = bits;
  if (lenText !== undefined) {
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > bits) {
      errors.push(`VIP "${text}" has an invalid prefix length (0..${bits})`);
      return undefined;
    }
    len = Number(lenText);
  }
  if (len === 0) {
    errors.push(`VIP "${text}" would capture all traffic (prefix length 0)`);
    return undefined;
  }
  if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) {
    errors.push(`VIP "${text}" is IPv4-mapped: use the IPv4 form`);
    return undefined;
  }
  const network = (
    addr.kind() === "ipv4"
      ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${len}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${len}`)
  ) as Addr;
  if (canonicalAddress(network) !== canonicalAddress(addr)) {
    errors.push(
      `VIP "${text}" has host bits set (did you mean ${canonicalAddress(network)}/${len}?)`,
    );
    return undefined;
  }
  return [addr, len];
}

/** "80,443,8000-8100" -> [{80,80},{443,443},{8000,8100}]; throws SetupError. */
export function parsePorts(text: string): PortRange[] {
  return rethrowAs(SetupError, () => parsePortList(text, { field: "ports", allowZero: false }));
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Weights divided by their gcd (zero weights stay zero). */
export function reducedWeights(weights: readonly number[]): number[] {
  const g = weights.reduce((acc, w) => gcd(acc, w), 0) || 1;
  return weights.map((w) => w / g);
}

/** Validates and normalises; throws one SetupError listing every problem found. */
export function normalizeSpec(spec: SetupSpec): NormalizedSpec {
  const errors: string[] = [];
  const s = spec as Partial<SetupSpec>;
  const name = String(s.name ?? "");
  if (!NAME_PATTERN.test(name)) {
    errors.push(`name "${name}" must be ${LB_NAME_RULE}`);
  }
  const mode = s.mode;
  if (mode !== "nat" && mode !== "dsr" && mode !== "statistic") {
    errors.push(`mode "${String(mode)}" must be nat, dsr or statistic`);
  }

  // VIPs: one family, no overlap.
  const vips: [Addr, number][] = [];
  if (!Array.isArray(s.vips) || s.vips.length === 0) errors.push("at least one VIP is needed");
  for (const text of s.vips ?? []) {
    const v = parseVip(text, errors);
    if (v) vips.push(v);
  }
  const family: Family = vips.length > 0 ? familyOf(vips[0][0]) : 4;
  if (vips.some(([a]) => familyOf(a) !== family)) {
    errors.push(
      "VIPs mix IPv4 and IPv6: one setup balances one family (make one setup per family)",
    );
  }
  for (let i = 0; i < vips.length; i++) {
    for (let j = i + 1; j < vips.length; j++) {
      const [a, al] = vips[i];
      const [b, bl] = vips[j];
      if (a.kind() !== b.kind()) continue;
      if (a.match(b, Math.min(al, bl))) {
        errors.push(`VIPs ${canonicalAddress(a)}/${al} and ${canonicalAddress(b)}/${bl} overlap`);
      }
    }
  }

  // Targets.
  const targets: NormalizedTarget[] = [];
  const marks = new Set<number>();
  const addrs = new Set<string>();
  if (!Array.isArray(s.targets) || s.targets.length === 0) {
    errors.push("at least one target is needed");
  }
  for (const t of s.targets ?? []) {
    const label = `target ${JSON.stringify(t?.address)} (fwmark ${String(t?.fwmark)})`;
    if (!isFwmark(t?.fwmark)) {
      errors.push(`${label}: fwmark must be an integer 1..${MAX_FWMARK}`);
    } else if (marks.has(t.fwmark)) {
      errors.push(`fwmark ${t.fwmark} is used by more than one target`);
    } else {
      marks.add(t.fwmark);
      if (mode === "dsr" && RESERVED_TABLES.has(t.fwmark)) {
        errors.push(
          `${label}: in dsr mode the fwmark is also the routing table, and 253-255 are the kernel's default/main/local tables`,
        );
      }
    }
    if (!isWeight(t?.weight, { allowZero: true })) {
      errors.push(`${label}: weight must be an integer 0..${MAX_WEIGHT}`);
    }
    const addr = typeof t?.address === "string" ? parseAddress(t.address) : undefined;
    if (!addr) {
      errors.push(`${label}: address is not an IPv4/IPv6 address (no prefix length)`);
      continue;
    }
    const range = addr.range();
    if (["unspecified", "multicast", "loopback", "broadcast"].includes(range)) {
      errors.push(`${label}: a target must be a unicast address, not ${range}`);
    }
    if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) {
      errors.push(`${label}: IPv4-mapped address: use the IPv4 form`);
    }
    if (vips.length > 0 && familyOf(addr) !== family) {
      errors.push(`${label}: address family differs from the VIPs' (IPv${family})`);
    }
    for (const [v, len] of vips) {
      if (v.kind() === addr.kind() && addr.match(v, len)) {
        errors.push(`${label}: address lies inside VIP ${canonicalAddress(v)}/${len}`);
      }
    }
    const canon = canonicalAddress(addr);
    if (addrs.has(canon)) errors.push(`target address ${canon} is listed twice`);
    addrs.add(canon);
    targets.push({ fwmark: t.fwmark, address: canon, weight: t.weight });
  }
  if (targets.length > 0 && targets.every((t) => t.weight === 0)) {
    errors.push("every target has weight 0: nothing could receive traffic");
  }

  // Queue (nat/dsr only).
  const queue = s.queue ?? { first: 0, last: 0 };
  if (mode !== "statistic") {
    if (!isUint(queue.first, 65535) || !isUint(queue.last, 65535) || queue.first > queue.last) {
      errors.push(
        `queue ${String(queue.first)}:${String(queue.last)} must be 0..65535 with first <= last`,
      );
    }
  }
  for (const key of ["queueBypass", "synOnly", "snat"] as const) {
    if (typeof s[key] !== "boolean") errors.push(`${key} must be true or false`);
  }
  if (s.synOnly && mode !== "nat") {
    errors.push(
      mode === "statistic"
        ? "--syn-only applies to --mode nat (statistic rules only ever see new connections)"
        : "--syn-only needs --mode nat (dsr keeps no conntrack state to carry the mark)",
    );
  }
  if (s.snat && mode === "dsr") {
    errors.push("--snat needs --mode nat or statistic (dsr targets answer the client directly)");
  }
  if (s.statistic !== "nth" && s.statistic !== "random") {
    errors.push(`statistic "${String(s.statistic)}" must be nth or random`);
  }
  const rulePriority = s.rulePriority ?? DEFAULT_RULE_PRIORITY;
  if (!isUint(rulePriority, 32765) || rulePriority === 0) {
    errors.push(`rule priority ${String(rulePriority)} must be 1..32765`);
  }

  // Fragment handling (dsr only).
  const frag = s.fragments;
  if (frag !== undefined) {
    if (mode === "nat") {
      errors.push(
        "--fragments needs --mode dsr: nat needs conntrack, and conntrack reassembles fragments (prerouting -400) before the queue, so in nat mode the daemon only ever sees whole datagrams and --fragments cannot apply",
      );
    } else if (mode === "statistic") {
      errors.push(
        "--fragments needs --mode dsr: statistic mode has no daemon, and its conntrack reassembles fragments anyway",
      );
    }
    if (typeof frag !== "object" || frag === null) {
      errors.push("fragments must be { queue, tun }");
    } else {
      if (!isUint(frag.queue, 65535)) {
        errors.push(`fragment queue ${String(frag.queue)} must be 0..65535`);
      } else if (
        mode !== "statistic" &&
        isUint(queue.first, 65535) &&
        isUint(queue.last, 65535) &&
        frag.queue >= queue.first &&
        frag.queue <= queue.last
      ) {
        errors.push(
          `fragment queue ${frag.queue} lies in the normal queue range ${queue.first}:${queue.last}: it needs a queue of its own (full copy range)`,
        );
      }
      if (!validTunName(frag.tun)) {
        errors.push(
          `TUN name ${JSON.stringify(frag.tun)} must be 1-15 printable ASCII characters without "/", ":", "%" or spaces (and not "." or "..")`,
        );
      }
    }
    if (marks.has(FRAGMENT_MARK)) {
      errors.push(
        `fwmark ${FRAGMENT_MARK} (0x${FRAGMENT_MARK.toString(16)}) is reserved for fragments with --fragments`,
      );
    }
  }

  // Protocols and ports.
  const protocols: SetupProtocol[] = [];
  if (!Array.isArray(s.protocols)) errors.push("protocols must be a list");
  for (const p of s.protocols ?? []) {
    if (!PROTOCOLS.includes(p)) errors.push(`protocol "${String(p)}" must be tcp, udp or sctp`);
    else if (protocols.includes(p)) errors.push(`protocol ${p} is listed twice`);
    else protocols.push(p);
  }
  let ports: PortRange[] = [];
  try {
    ports = parsePorts(String(s.ports ?? ""));
  } catch (err) {
    errors.push((err as Error).message);
  }

  if (mode === "statistic" && s.statistic === "nth" && targets.length > 0) {
    const slots = reducedWeights(targets.map((t) => t.weight)).reduce((a, b) => a + b, 0);
    if (slots > MAX_NTH_SLOTS) {
      errors.push(
        `nth round robin with these weights needs ${slots} rules (max ${MAX_NTH_SLOTS}): use smaller weights or --statistic random`,
      );
    }
  }

  const tierPeers = normalizePeers(s.tierPeers, {
    mode,
    fragments: frag !== undefined,
    family,
    vips,
    targets,
    errors,
  });

  if (errors.length > 0) {
    throw new SetupError(`invalid setup "${name}": ${errors.join("; ")}`);
  }
  return {
    name,
    mode: mode as SetupSpec["mode"],
    family,
    vips: vips.map(([a, len]) => `${canonicalAddress(a)}/${len}`),
    targets,
    queue: { first: queue.first, last: queue.last },
    queueBypass: s.queueBypass as boolean,
    synOnly: s.synOnly as boolean,
    protocols: protocols.length === 0 && ports.length > 0 ? [...PROTOCOLS] : protocols,
    ports,
    statistic: s.statistic as "nth" | "random",
    snat: s.snat as boolean,
    rulePriority,
    ...(frag ? { fragments: { queue: frag.queue, tun: frag.tun } } : {}),
    tierPeers,
  };
}

/**
 * --tier-peer: the other instances of a load-balancer tier, routed to by fwmark exactly as
 * dsr targets are, so their fwmarks share the targets' number space (and routing tables).
 */
function normalizePeers(
  peers: unknown,
  ctx: {
    mode: unknown;
    fragments: boolean;
    family: Family;
    vips: readonly [Addr, number][];
    targets: readonly NormalizedTarget[];
    errors: string[];
  },
): NormalizedPeer[] {
  const { errors } = ctx;
  if (peers === undefined) return [];
  if (!Array.isArray(peers)) {
    errors.push("tierPeers must be a list of { fwmark, address }");
    return [];
  }
  if (peers.length === 0) return [];
  if (ctx.mode !== "dsr") {
    errors.push(
      "--tier-peer needs --mode dsr: peers are reached by fwmark routing, as dsr targets are",
    );
  } else if (!ctx.fragments) {
    errors.push(
      "--tier-peer needs --fragments: the tier only moves fragments (to the instance their addresses hash to), and only --fragments hands the daemon every fragment",
    );
  }
  const out: NormalizedPeer[] = [];
  const marks = new Set<number>();
  const addrs = new Set<string>();
  for (const p of peers as Partial<SetupTierPeer>[]) {
    const label = `tier peer ${JSON.stringify(p?.address)} (fwmark ${String(p?.fwmark)})`;
    const fwmark = p?.fwmark;
    if (!isFwmark(fwmark)) {
      errors.push(`${label}: fwmark must be an integer 1..${MAX_FWMARK}`);
    } else if (marks.has(fwmark)) {
      errors.push(`fwmark ${fwmark} is used by more than one tier peer`);
    } else {
      marks.add(fwmark);
      if (RESERVED_TABLES.has(fwmark)) {
        errors.push(
          `${label}: the fwmark is also the routing table, and 253-255 are the kernel's default/main/local tables`,
        );
      }
      const target = ctx.targets.find((t) => t.fwmark === fwmark);
      if (target) {
        errors.push(
          `${label}: fwmark ${fwmark} is also the fwmark of target ${target.address}; a peer's fwmark (its nflb init --ownfw) must differ from every target's`,
        );
      }
      if (fwmark === FRAGMENT_MARK) {
        errors.push(
          `${label}: fwmark ${FRAGMENT_MARK} (0x${FRAGMENT_MARK.toString(16)}) is reserved for fragments`,
        );
      }
    }
    const addr = typeof p?.address === "string" ? parseAddress(p.address) : undefined;
    if (!addr) {
      errors.push(`${label}: address is not an IPv4/IPv6 address (no prefix length)`);
      continue;
    }
    const range = addr.range();
    if (["unspecified", "multicast", "loopback", "broadcast"].includes(range)) {
      errors.push(`${label}: a peer must be a unicast address, not ${range}`);
    }
    if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) {
      errors.push(`${label}: IPv4-mapped address: use the IPv4 form`);
    }
    if (ctx.vips.length > 0 && familyOf(addr) !== ctx.family) {
      errors.push(`${label}: address family differs from the VIPs' (IPv${ctx.family})`);
    }
    for (const [v, len] of ctx.vips) {
      if (v.kind() === addr.kind() && addr.match(v, len)) {
        errors.push(`${label}: address lies inside VIP ${canonicalAddress(v)}/${len}`);
      }
    }
    const canon = canonicalAddress(addr);
    if (ctx.targets.some((t) => t.address === canon)) {
      errors.push(`${label}: ${canon} is also a target's address`);
    }
    if (addrs.has(canon)) errors.push(`tier peer address ${canon} is listed twice`);
    addrs.add(canon);
    if (typeof fwmark === "number") out.push({ fwmark, address: canon });
  }
  return out;
}

/** Throws a SetupError with a clear message if the spec cannot be applied. */
export function validateSpec(spec: SetupSpec): void {
  normalizeSpec(spec);
}
