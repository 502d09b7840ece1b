// The BIRD configuration nflb writes (the include file). Pure: the same spec and VIPs
// give the same text, so a dry run shows exactly what BIRD will read.
//
// What changes and what does not: BIRD restarts a protocol whose block changes
// ("Other configuration change" resets a BGP session). The BGP blocks below depend only
// on the neighbours, the local ASN and the router id; the VIPs (and their communities and
// MED) live in the two static protocols, which BIRD reconfigures in place (it adds and
// removes routes, and re-sends the changed ones) without touching any session.
import type { BfdSpec, BgpNeighbor, BgpSpec } from "./spec.js";
import { type Family, familyOf, type NormalizedVip, protocolName } from "./validate.js";

/** BIRD routing tables of nflb's routes: apart from master4/6, so no kernel protocol of
 * the operator's bird.conf installs them into the kernel. */
export const TABLES: Record<Family, string> = { 4: "nflb4", 6: "nflb6" };
/** The static protocols holding the announced VIPs. */
export const STATIC_PROTOCOLS: Record<Family, string> = { 4: "nflb_vip4", 6: "nflb_vip6" };
export const BFD_PROTOCOL = "nflb_bfd";
export const EXPORT_FILTER = "nflb_export";
/** Custom route attribute carrying a VIP's MED to the export filter (see below). */
export const MED_ATTRIBUTE = "nflb_med";
/** Default name of the device whose existence carries the announcements ("_": the
 * fragment TUN devices of setups are "nflb-NAME", so none can take this name). */
export const DEFAULT_DEVICE = "nflb_bgp";

export interface RenderOptions {
  /** The device the VIP routes point at (it exists only while nflb holds it open). */
  device: string;
}

export interface BgpBlock {
  name: string;
  description?: string;
  /** Per-protocol router id (leaves the global one of bird.conf alone). */
  routerId?: string;
  localAsn: number;
  neighbor: string;
  neighborAsn: number;
  holdTimeS?: number;
  password?: string;
  bfd?: BfdSpec;
  /** Extra option lines, without the trailing ";" (test routers: "connect delay time 1"). */
  options?: string[];
  channel: {
    family: Family;
    table?: string;
    import: string;
    export: string;
    nextHopSelf?: boolean;
  };
}

const quote = (s: string) => `"${s}"`;

function bfdOptions(b: BfdSpec): string {
  // The interval both ways: transmit this often, and ask the neighbour to do the same.
  return `bfd { min rx interval ${b.intervalMs} ms; min tx interval ${b.intervalMs} ms; multiplier ${b.multiplier}; }`;
}

/** One `protocol bgp` block; the same shape serves nflb's sessions and test routers. */
export function renderBgpBlock(b: BgpBlock): string {
  const lines = [`protocol bgp ${b.name} {`];
  const opt = (line: string) => lines.push(`  ${line};`);
  if (b.description) opt(`description ${quote(b.description)}`);
  if (b.routerId) opt(`router id ${b.routerId}`);
  opt(`local as ${b.localAsn}`);
  opt(`neighbor ${b.neighbor} as ${b.neighborAsn}`);
  if (b.holdTimeS !== undefined) opt(`hold time ${b.holdTimeS}`);
  if (b.password !== undefined) opt(`password ${quote(b.password)}`);
  if (b.bfd) opt(bfdOptions(b.bfd));
  for (const o of b.options ?? []) opt(o);
  const c = b.channel;
  const parts = [
    ...(c.table ? [`table ${c.table}`] : []),
    `import ${c.import}`,
    `export ${c.export}`,
    ...(c.nextHopSelf ? ["next hop self"] : []),
  ];
  opt(`ipv${c.family} { ${parts.join("; ")}; }`);
  lines.push("}");
  return lines.join("\n");
}

function neighborBlock(spec: BgpSpec, n: BgpNeighbor): string {
  const family = familyOf(n.address);
  return renderBgpBlock({
    name: protocolName(n.address),
    description: `nflb: VIPs to ${n.address}`,
    routerId: spec.routerId,
    localAsn: spec.localAsn,
    neighbor: n.address,
    neighborAsn: n.asn,
    holdTimeS: n.holdTimeS,
    password: n.password,
    bfd: n.bfd,
    // Only nflb's own routes are in these tables; nothing is learnt from the router.
    // The session's own address is the next hop: the router sends VIP traffic to us.
    channel: {
      family,
      table: TABLES[family],
      import: "none",
      export: `filter ${EXPORT_FILTER}`,
      nextHopSelf: true,
    },
  });
}

function vipRoute(v: NormalizedVip, device: string): string {
  const attrs = v.communities.map((c) =>
    c.kind === "standard"
      ? `bgp_community.add((${c.asn}, ${c.value}));`
      : `bgp_large_community.add((${c.global}, ${c.local1}, ${c.local2}));`,
  );
  if (v.med !== undefined) attrs.push(`${MED_ATTRIBUTE} = ${v.med};`);
  const block = attrs.length > 0 ? ` { ${attrs.join(" ")} }` : "";
  return `  route ${v.prefix} via ${quote(device)}${block};`;
}

function staticBlock(family: Family, vips: readonly NormalizedVip[], device: string): string {
  return [
    `protocol static ${STATIC_PROTOCOLS[family]} {`,
    `  ipv${family} { table ${TABLES[family]}; };`,
    // Also withdraw when the device exists without a process holding it (no carrier).
    "  check link yes;",
    ...vips.filter((v) => v.family === family).map((v) => vipRoute(v, device)),
    "}",
  ].join("\n");
}

const byPrefix = (a: NormalizedVip, b: NormalizedVip) =>
  a.family - b.family || (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0);

/**
 * The include file: tables, the export filter, BFD (when a neighbour uses it), one static
 * protocol per family holding the VIPs announced now, one BGP protocol per neighbour.
 * `spec` and `vips` must be validated (validateBgpSpec, validateVip).
 */
export function renderInclude(
  spec: BgpSpec,
  vips: readonly NormalizedVip[],
  options: RenderOptions,
): string {
  const sorted = [...vips].sort(byPrefix);
  const parts = [
    [
      "# Written by nflb, rewritten whenever its announcements change: do not edit.",
      `# bird.conf includes it once: include ${quote(spec.bird.include)};`,
      `# A VIP route points at device "${options.device}", which exists only while nflb`,
      "# holds it open: when nflb stops or dies, BIRD withdraws every VIP at once.",
    ].join("\n"),
    [`ipv4 table ${TABLES[4]};`, `ipv6 table ${TABLES[6]};`].join("\n"),
    [
      "# BIRD sends a MED to an eBGP neighbour only when the export filter sets it, so the",
      "# static routes carry it in an attribute of their own and the filter copies it.",
      `attribute int ${MED_ATTRIBUTE};`,
      "",
      `filter ${EXPORT_FILTER} {`,
      `  if defined(${MED_ATTRIBUTE}) then bgp_med = ${MED_ATTRIBUTE};`,
      "  accept;",
      "}",
    ].join("\n"),
  ];
  if (spec.neighbors.some((n) => n.bfd)) {
    // Timers are per session (in the BGP blocks); this instance serves the sessions.
    parts.push(`protocol bfd ${BFD_PROTOCOL} {\n}`);
  }
  parts.push(staticBlock(4, sorted, options.device), staticBlock(6, sorted, options.device));
  for (const n of spec.neighbors) parts.push(neighborBlock(spec, n));
  return `${parts.join("\n\n")}\n`;
}
