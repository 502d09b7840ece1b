// Validation and normalisation of the BGP spec and of VIP announcements. Pure: the
// config schema checks the file first; this is the driver's own guard, so nothing it
// renders can surprise BIRD (every value lands in BIRD's configuration language).
import { isAbsolute } from "node:path";
import ipaddr from "ipaddr.js";
import type { BfdSpec, BgpNeighbor, BgpSpec, VipAnnouncement } from "./spec.js";
import { BgpError } from "./types.js";

export type Family = 4 | 6;

/** A community parsed: standard (ASN:VALUE, 16 bits each) or large (A:B:C, 32 bits each). */
export type Community =
  | { kind: "standard"; asn: number; value: number }
  | { kind: "large"; global: number; local1: number; local2: number };

/** A VIP ready to render: canonical prefix, family, parsed communities. */
export interface NormalizedVip {
  prefix: string;
  family: Family;
  communities: Community[];
  med?: number;
}

const U16 = 0xffff;
const U32 = 0xffffffff;
/** RFC 6793: AS_TRANS stands in for 4-byte ASNs towards old speakers, never a real ASN. */
const AS_TRANS = 23456;
/** Linux's TCP MD5 key is at most 80 bytes (TCP_MD5SIG_MAXKEYLEN). */
const MAX_PASSWORD_BYTES = 80;

function fail(path: string, what: string): never {
  throw new BgpError("invalid", `bgp.${path}: ${what}`);
}

const isInt = (v: unknown, min: number, max: number): v is number =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;

function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (!text.includes("%") && ipaddr.IPv6.isValid(text)) return ipaddr.IPv6.parse(text);
  return undefined;
}

function canonical(a: ipaddr.IPv4 | ipaddr.IPv6): string {
  return a instanceof ipaddr.IPv6 ? a.toRFC5952String() : a.toString();
}

export function familyOf(address: string): Family {
  return address.includes(":") ? 6 : 4;
}

function checkAsn(path: string, asn: unknown): number {
  if (!isInt(asn, 1, U32) || asn === AS_TRANS) {
    fail(path, `expected an AS number 1..4294967295 (not 23456), got ${JSON.stringify(asn)}`);
  }
  return asn as number;
}

function checkUnicast(path: string, text: unknown): string {
  const a = typeof text === "string" ? parseAddress(text) : undefined;
  if (!a) return fail(path, `expected an IPv4 or IPv6 address, got ${JSON.stringify(text)}`);
  if (a instanceof ipaddr.IPv6 && a.isIPv4MappedAddress()) {
    return fail(path, `IPv4-mapped IPv6 address ${text}: write the IPv4 address`);
  }
  const range = a.range();
  if (["unspecified", "multicast", "broadcast", "loopback"].includes(range)) {
    return fail(path, `${text} is a ${range} address, not a neighbour`);
  }
  return canonical(a);
}

function checkBfd(path: string, bfd: BfdSpec): BfdSpec {
  // Whole milliseconds, as the config file writes them; above a minute BFD detects
  // nothing the hold timer would not.
  if (!isInt(bfd.intervalMs, 1, 60_000)) {
    fail(`${path}.intervalMs`, `expected 1..60000 ms, got ${JSON.stringify(bfd.intervalMs)}`);
  }
  if (!isInt(bfd.multiplier, 1, 255)) {
    fail(`${path}.multiplier`, `expected 1..255, got ${JSON.stringify(bfd.multiplier)}`);
  }
  return { intervalMs: bfd.intervalMs, multiplier: bfd.multiplier };
}

/** BIRD's strings are double-quoted, without escapes: no quote, no line break inside. */
const SAFE_STRING = /^[\x20-\x21\x23-\x7e]*$/;

function checkPassword(path: string, password: unknown): string {
  if (typeof password !== "string" || password.length === 0) {
    return fail(path, "expected a non-empty string");
  }
  if (!SAFE_STRING.test(password)) {
    return fail(path, 'printable ASCII only, without " (BIRD cannot quote it)');
  }
  if (password.length > MAX_PASSWORD_BYTES) {
    return fail(
      path,
      `at most ${MAX_PASSWORD_BYTES} characters (TCP MD5 key), got ${password.length}`,
    );
  }
  return password;
}

function checkNeighbor(i: number, n: BgpNeighbor): BgpNeighbor {
  const path = `neighbors[${i}]`;
  const out: BgpNeighbor = {
    address: checkUnicast(`${path}.address`, n.address),
    asn: checkAsn(`${path}.asn`, n.asn),
    holdTimeS: n.holdTimeS,
  };
  if (!isInt(n.holdTimeS, 3, 65535)) {
    fail(`${path}.holdTimeS`, `expected 3..65535 seconds, got ${JSON.stringify(n.holdTimeS)}`);
  }
  if (n.password !== undefined) out.password = checkPassword(`${path}.password`, n.password);
  if (n.bfd !== undefined) out.bfd = checkBfd(`${path}.bfd`, n.bfd);
  return out;
}

function checkPath(path: string, p: unknown): string {
  if (typeof p !== "string" || !isAbsolute(p)) {
    return fail(path, `expected an absolute path, got ${JSON.stringify(p)}`);
  }
  if (!SAFE_STRING.test(p)) {
    return fail(path, 'printable ASCII only, without " (BIRD cannot quote it)');
  }
  return p;
}

/** The spec with canonical addresses, or a BgpError naming the first bad value. */
export function validateBgpSpec(spec: BgpSpec): BgpSpec {
  const localAsn = checkAsn("localAsn", spec.localAsn);
  const rid =
    typeof spec.routerId === "string" && ipaddr.IPv4.isValidFourPartDecimal(spec.routerId)
      ? ipaddr.IPv4.parse(spec.routerId)
      : undefined;
  if (!rid || rid.toString() === "0.0.0.0") {
    fail(
      "routerId",
      `expected an IPv4 address other than 0.0.0.0, got ${JSON.stringify(spec.routerId)}`,
    );
  }
  if (!Array.isArray(spec.neighbors) || spec.neighbors.length === 0) {
    fail("neighbors", "expected at least one neighbour");
  }
  const neighbors = spec.neighbors.map((n, i) => checkNeighbor(i, n));
  const seen = new Map<string, number>();
  for (const [i, n] of neighbors.entries()) {
    const first = seen.get(n.address);
    if (first !== undefined) {
      fail(`neighbors[${i}].address`, `${n.address} is also neighbors[${first}]`);
    }
    seen.set(n.address, i);
  }
  return {
    localAsn,
    routerId: (rid as ipaddr.IPv4).toString(),
    neighbors,
    bird: {
      socket: checkPath("bird.socket", spec.bird?.socket),
      include: checkPath("bird.include", spec.bird?.include),
    },
  };
}

/** "65000:100" -> standard, "4200000000:1:2" -> large; undefined when neither. */
export function parseCommunity(text: string): Community | undefined {
  if (!/^\d{1,10}(:\d{1,10}){1,2}$/.test(text)) return undefined;
  const parts = text.split(":").map(Number);
  if (parts.length === 2) {
    const [asn, value] = parts;
    return asn <= U16 && value <= U16 ? { kind: "standard", asn, value } : undefined;
  }
  const [global, local1, local2] = parts;
  return parts.every((p) => p <= U32) ? { kind: "large", global, local1, local2 } : undefined;
}

export function formatCommunity(c: Community): string {
  return c.kind === "standard" ? `${c.asn}:${c.value}` : `${c.global}:${c.local1}:${c.local2}`;
}

/** A VIP's announcement, normalised; `path` names it in errors ("services.web.vips[0]"). */
export function validateVip(v: VipAnnouncement, path = "vip"): NormalizedVip {
  const where = (what: string) => new BgpError("invalid", `${path}${what}`);
  if (typeof v.prefix !== "string" || !v.prefix.includes("/")) {
    throw where(
      `: expected a prefix like 10.0.0.1/32 or fd00::1/128, got ${JSON.stringify(v.prefix)}`,
    );
  }
  const [addrText, lenText] = v.prefix.split("/");
  const addr = parseAddress(addrText);
  const family: Family | undefined = addr ? (addr.kind() === "ipv4" ? 4 : 6) : undefined;
  const max = family === 4 ? 32 : 128;
  const len = /^\d{1,3}$/.test(lenText) ? Number(lenText) : -1;
  if (!addr || !family || len < 0 || len > max) {
    throw where(
      `: expected a prefix like 10.0.0.1/32 or fd00::1/128, got ${JSON.stringify(v.prefix)}`,
    );
  }
  if (addr instanceof ipaddr.IPv6 && addr.isIPv4MappedAddress()) {
    throw where(`: IPv4-mapped IPv6 prefix ${v.prefix}: write the IPv4 prefix`);
  }
  const network =
    family === 4
      ? ipaddr.IPv4.networkAddressFromCIDR(v.prefix)
      : ipaddr.IPv6.networkAddressFromCIDR(v.prefix);
  if (canonical(network) !== canonical(addr)) {
    throw where(`: ${v.prefix} has host bits set (the network is ${canonical(network)}/${len})`);
  }
  const communities = (v.communities ?? []).map((text, i) => {
    const c = typeof text === "string" ? parseCommunity(text) : undefined;
    if (!c) {
      throw where(
        `.communities[${i}]: expected ASN:VALUE (0..65535 each) or A:B:C (0..4294967295 each), got ${JSON.stringify(text)}`,
      );
    }
    return c;
  });
  const out: NormalizedVip = { prefix: `${canonical(addr)}/${len}`, family, communities };
  if (v.med !== undefined) {
    if (!isInt(v.med, 0, U32)) {
      throw where(`.med: expected 0..4294967295, got ${JSON.stringify(v.med)}`);
    }
    out.med = v.med;
  }
  return out;
}

/**
 * The announcement device's name: a kernel device name (at most 15 bytes; 14 here, the
 * addon's TUN open takes no more), in characters safe in BIRD's quoted strings.
 */
export function validateDevice(name: string): string {
  if (!/^[A-Za-z0-9_.-]{1,14}$/.test(name) || name === "." || name === "..") {
    throw new BgpError(
      "invalid",
      `announcement device ${JSON.stringify(name)}: expected 1-14 characters of A-Z a-z 0-9 _ . -`,
    );
  }
  return name;
}

/** BIRD protocol name of a neighbour's session: stable while its address stays. */
export function protocolName(address: string): string {
  return `nflb_${address.replace(/[.:]/g, "_")}`;
}
