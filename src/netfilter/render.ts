// Renders a normalised spec into the exact rule sets that setup() applies. Pure.
//
// Packet path (prerouting; output is the same with the locally originated traffic):
//   -450 inet nflb_<name>        dsr --fragments: VIP traffic gets `notrack`, so neither
//                                 conntrack nor its defragmentation (-400) touches it, and
//                                 every fragment to a VIP gets FRAGMENT_MARK.
//   -150 mangle (iptables-nft)   NFLB-<name>: VIP/proto/ports -> NFQUEUE (nat, dsr).
//                                 With proto/ports, per VIP also ICMP rules (comment
//                                 nflb:<name>:icmp): echo requests, and in dsr the errors
//                                 that quote a packet (see icmpTypes).
//                                 --fragments: first, VIP + FRAGMENT_MARK -> the fragment
//                                 queue (later fragments have no ports for the rules
//                                 below; first fragments go there too, so that one
//                                 worker sees every fragment of a datagram).
//                                 This kernel has no nft `queue` expression, so this one
//                                 rule goes through iptables-nft (xt compat).
//   -140 inet nflb_<name>        nat --syn-only: save the daemon's mark into conntrack on
//                                 NEW, restore it on later packets. A queue verdict ACCEPT
//                                 resumes at the next hook priority, not at the next rule,
//                                 so this must be a chain of its own after mangle.
//                                 dsr: per-target (and per-peer) packet counters by mark.
//   -100 inet nflb_<name>        nat: DNAT by mark (nat chains see only a flow's first
//        nat NFLB-<name>           packet; conntrack applies the binding to the rest).
//                                 statistic: iptables `statistic` rules + DNAT.
//    -90 inet nflb_<name>        nat/statistic: per-target packet counters (after DNAT).
//   routing                      dsr: `ip rule fwmark N table N`, default via target;
//                                 the same per --tier-peer (fragments the daemon hands
//                                 to the tier instance owning them).
//    100 inet nflb_<name>        --snat: masquerade towards the targets.
//   TUN device (--fragments)     where the daemon re-injects stored fragments: they enter
//                                 prerouting again on it and meet the same rules.

import { FRAGMENT_MARK, type SetupSpec } from "./types.js";
import {
  type Family,
  type NormalizedPeer,
  type NormalizedSpec,
  type NormalizedTarget,
  normalizeSpec,
  type PortRange,
  reducedWeights,
} from "./validate.js";

export type IptTableName = "mangle" | "nat";
/** A rule is its iptables arguments after "-A <chain>". */
export interface IptChain {
  name: string;
  rules: string[][];
}
export interface IptJump {
  from: "PREROUTING" | "OUTPUT";
  to: string;
}
export interface IptTablePlan {
  table: IptTableName;
  chains: IptChain[];
  jumps: IptJump[];
}
export interface IpItem {
  kind: "route" | "rule";
  family: Family;
  fwmark: number;
  table: number;
  /** rule: its preference. */
  pref?: number;
  /** route: the gateway of the table's default route. */
  via?: string;
}

/** The TUN device of --fragments; `alias` (IFLA_IFALIAS) marks it as this setup's. */
export interface TunItem {
  name: string;
  alias: string;
}

/** Everything one setup owns; also what the record keeps for teardown. */
export interface Plan {
  name: string;
  mode: NormalizedSpec["mode"];
  family: Family;
  /** nft table "inet nflb_<name>", replaced atomically by `nft`. */
  nftTable: string;
  nft: string;
  /** Chains of the nft table and their rule counts, to tell whether the table is intact. */
  nftChains: Record<string, number>;
  iptables: { binary: "iptables-nft" | "ip6tables-nft"; tables: IptTablePlan[] };
  /** dsr: routes then rules, in the order they are added. */
  ipItems: IpItem[];
  targets: NormalizedTarget[];
  /** --fragments: the TUN device (absent without, also in records of older setups). */
  tun?: TunItem;
  /** --tier-peer: the other instances of the tier (absent without). */
  tierPeers?: NormalizedPeer[];
}

export interface RenderedSetup {
  /** The `nft -f -` script (replaces the table in one transaction). */
  nft: string;
  /** The iptables-nft commands, one argv each (applied as one iptables-nft-restore). */
  iptables: string[][];
  /** The same rules as `iptables-nft-restore --noflush` input. */
  iptablesRestore: string;
  /**
   * Commands outside netfilter, one argv each, in order: the TUN device of --fragments
   * (ip tuntap, ip link, sysctl), then the dsr routes and rules (ip route, ip rule).
   */
  ipRules: string[][];
}

export const nftTableName = (name: string): string => `nflb_${name}`;
export const queueChainName = (name: string): string => `NFLB-${name}`;
export const balanceChainName = (name: string): string => `NFLB-${name}-LB`;
export const queueComment = (name: string): string => `nflb:${name}:queue`;
export const fragmentComment = (name: string): string => `nflb:${name}:fragments`;
export const icmpComment = (name: string): string => `nflb:${name}:icmp`;
/** The TUN device's alias: how setup and teardown recognise it as theirs. */
export const tunAlias = (name: string): string => `nflb:${name}:fragments`;
/** nft and iptables print marks in hex. */
export const FRAGMENT_MARK_HEX = `0x${FRAGMENT_MARK.toString(16)}`;
/** The nft counter of what this instance's daemon handed to a tier peer. */
export const peerCounter = (fwmark: number): string => `tier_${fwmark}`;
export const targetComment = (name: string, fwmark: number): string =>
  `nflb:${name}:fwmark=${fwmark}`;

/** multiport takes at most 15 ports per rule, a range counting as two. */
export function portChunks(ports: readonly PortRange[]): string[] {
  const chunks: string[] = [];
  let cur: string[] = [];
  let used = 0;
  for (const { lo, hi } of ports) {
    const cost = lo === hi ? 1 : 2;
    if (used + cost > 15) {
      chunks.push(cur.join(","));
      cur = [];
      used = 0;
    }
    cur.push(lo === hi ? String(lo) : `${lo}:${hi}`);
    used += cost;
  }
  if (cur.length > 0) chunks.push(cur.join(","));
  return chunks;
}

/**
 * ICMP types queued (or, in statistic mode, DNATed) by rules of their own when protocols
 * or ports narrow the balanced traffic; without them every protocol is queued anyway.
 *  - echo-request, every mode: ping to a VIP is answered by a target (the daemon hashes
 *    echo on the addresses: one client address, one target);
 *  - dsr only, the errors that quote a packet: the daemon keys them on the quoted flow,
 *    so frag-needed/packet-too-big (PMTU discovery), unreachable, time exceeded and
 *    parameter problem reach the target owning the flow. In nat and statistic mode
 *    conntrack already delivers them: an error about a NATed flow is RELATED and
 *    translated to its target at the nat hooks whatever its mark (NAT chains never see
 *    it), and one about no known flow is INVALID and cannot be DNATed either, so
 *    queueing them would only cost a trip to user space.
 */
export function icmpTypes(mode: NormalizedSpec["mode"], family: Family): string[] {
  if (mode !== "dsr") return ["echo-request"];
  return family === 4
    ? ["destination-unreachable", "time-exceeded", "parameter-problem", "echo-request"]
    : [
        "destination-unreachable",
        "packet-too-big",
        "time-exceeded",
        "parameter-problem",
        "echo-request",
      ];
}

interface Selector {
  match: string[];
  /** One of the ICMP rules (counted apart in readCounters). */
  icmp: boolean;
}

/** The match part shared by the queue rules and the statistic entry rules, per VIP. */
function selectors(n: NormalizedSpec): Selector[] {
  const out: Selector[] = [];
  const protos = n.protocols.length > 0 ? n.protocols : [undefined];
  const chunks = n.ports.length > 0 ? portChunks(n.ports) : [undefined];
  // Protocols given (ports imply tcp, udp, sctp): ICMP is not among them.
  const icmp = n.protocols.length > 0 ? icmpTypes(n.mode, n.family) : [];
  for (const vip of n.vips) {
    for (const proto of protos) {
      if (!proto) {
        out.push({ match: ["-d", vip], icmp: false });
        continue;
      }
      for (const chunk of chunks) {
        out.push({
          match: ["-d", vip, "-p", proto, ...(chunk ? ["-m", "multiport", "--dports", chunk] : [])],
          icmp: false,
        });
      }
    }
    for (const type of icmp) {
      out.push({
        match:
          n.family === 4
            ? ["-d", vip, "-p", "icmp", "-m", "icmp", "--icmp-type", type]
            : ["-d", vip, "-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", type],
        icmp: true,
      });
    }
  }
  return out;
}

/**
 * Smooth weighted round robin (as in nginx): an order of W slots (W = sum of the reduced
 * weights) in which every target appears weight times, spread out rather than bunched.
 */
export function nthSlots(weights: readonly number[]): number[] {
  const w = reducedWeights(weights);
  const total = w.reduce((a, b) => a + b, 0);
  const current = w.map(() => 0);
  const slots: number[] = [];
  for (let s = 0; s < total; s++) {
    let best = -1;
    for (let i = 0; i < w.length; i++) {
      if (w[i] === 0) continue;
      current[i] += w[i];
      if (best < 0 || current[i] > current[best]) best = i;
    }
    current[best] -= total;
    slots.push(best);
  }
  return slots;
}

function dnatArgs(n: NormalizedSpec, t: NormalizedTarget): string[] {
  return [
    "-m",
    "comment",
    "--comment",
    targetComment(n.name, t.fwmark),
    "-j",
    "DNAT",
    "--to-destination",
    t.address,
  ];
}

/**
 * statistic: rule k of a chain sees only what rules 0..k-1 did not take, so
 * `nth --every (W-k)` in slot k takes exactly one of every W new connections, and
 * `random --probability w_k / (w_k + ... + w_last)` gives target k the share w_k / W.
 */
function statisticRules(n: NormalizedSpec): string[][] {
  const rules: string[][] = [];
  if (n.statistic === "nth") {
    const slots = nthSlots(n.targets.map((t) => t.weight));
    slots.forEach((idx, k) => {
      const every = slots.length - k;
      const match =
        every > 1
          ? ["-m", "statistic", "--mode", "nth", "--every", String(every), "--packet", "0"]
          : [];
      rules.push([...match, ...dnatArgs(n, n.targets[idx])]);
    });
    return rules;
  }
  const active = n.targets.filter((t) => t.weight > 0);
  let remaining = active.reduce((a, t) => a + t.weight, 0);
  active.forEach((t, k) => {
    const last = k === active.length - 1;
    const match = last
      ? []
      : [
          "-m",
          "statistic",
          "--mode",
          "random",
          "--probability",
          (t.weight / remaining).toFixed(11),
        ];
    rules.push([...match, ...dnatArgs(n, t)]);
    remaining -= t.weight;
  });
  return rules;
}

function iptablesPlan(n: NormalizedSpec): IptTablePlan {
  const entry = queueChainName(n.name);
  const jumps: IptJump[] = [
    { from: "PREROUTING", to: entry },
    { from: "OUTPUT", to: entry },
  ];
  if (n.mode === "statistic") {
    const lb = balanceChainName(n.name);
    return {
      table: "nat",
      chains: [
        { name: entry, rules: selectors(n).map((sel) => [...sel.match, "-j", lb]) },
        { name: lb, rules: statisticRules(n) },
      ],
      jumps,
    };
  }
  const queue =
    n.queue.first === n.queue.last
      ? ["--queue-num", String(n.queue.first)]
      : ["--queue-balance", `${n.queue.first}:${n.queue.last}`];
  // Fragments first, by the mark the -450 chain set (per VIP: other setups' VIPs carry
  // the same mark and are for their own fragment queues).
  const fragments = n.fragments
    ? n.vips.map((vip) => [
        "-d",
        vip,
        "-m",
        "mark",
        "--mark",
        FRAGMENT_MARK_HEX,
        "-m",
        "comment",
        "--comment",
        fragmentComment(n.name),
        "-j",
        "NFQUEUE",
        "--queue-num",
        String(n.fragments?.queue),
        ...(n.queueBypass ? ["--queue-bypass"] : []),
      ])
    : [];
  const rules = selectors(n).map((sel) => [
    ...sel.match,
    ...(n.synOnly ? ["-m", "conntrack", "--ctstate", "NEW"] : []),
    "-m",
    "comment",
    "--comment",
    sel.icmp ? icmpComment(n.name) : queueComment(n.name),
    "-j",
    "NFQUEUE",
    ...queue,
    ...(n.queueBypass ? ["--queue-bypass"] : []),
  ]);
  return { table: "mangle", chains: [{ name: entry, rules: [...fragments, ...rules] }], jumps };
}

function ipItems(n: NormalizedSpec): IpItem[] {
  if (n.mode !== "dsr") return [];
  // Tier peers are reached exactly as targets are: by their fwmark's table.
  const hops = [...n.targets, ...n.tierPeers];
  const routes: IpItem[] = hops.map((t) => ({
    kind: "route",
    family: n.family,
    fwmark: t.fwmark,
    table: t.fwmark,
    via: t.address,
  }));
  const rules: IpItem[] = hops.map((t) => ({
    kind: "rule",
    family: n.family,
    fwmark: t.fwmark,
    table: t.fwmark,
    pref: n.rulePriority,
  }));
  // Routes first: a rule pointing at an empty table would only fall through anyway,
  // but this way every rule works from the moment it exists.
  return [...routes, ...rules];
}

/** The commands that create and configure the TUN device, as setup runs them. */
export function tunCommands(tun: TunItem, family: Family): string[][] {
  const cmds = [
    ["ip", "tuntap", "add", "dev", tun.name, "mode", "tun"],
    // No IPv6 link-local address (and so no routes or MLD) on it: it only receives.
    ["ip", "link", "set", "dev", tun.name, "alias", tun.alias, "addrgenmode", "none", "up"],
  ];
  // Re-injected fragments carry the client's source address, whose route is elsewhere.
  if (family === 4) cmds.push(["sysctl", "-qw", `${rpFilterKey(tun.name)}=0`]);
  return cmds;
}

/** sysctl's key for a device's rp_filter ("/" separators when the name holds a "."). */
export function rpFilterKey(dev: string): string {
  return dev.includes(".") ? `net/ipv4/conf/${dev}/rp_filter` : `net.ipv4.conf.${dev}.rp_filter`;
}

/** "replace" is for routes only. */
export function ipItemArgs(item: IpItem, op: "add" | "del" | "replace"): string[] {
  const fam = item.family === 4 ? "-4" : "-6";
  if (item.kind === "route") {
    return ["ip", fam, "route", op, "default", "via", item.via ?? "", "table", String(item.table)];
  }
  return [
    "ip",
    fam,
    "rule",
    op,
    "pref",
    String(item.pref),
    "fwmark",
    String(item.fwmark),
    "table",
    String(item.table),
  ];
}

export function ipItemKey(item: IpItem): string {
  return ipItemArgs(item, "add").join(" ");
}

function nftProtocols(protocols: readonly string[]): string {
  return protocols.length === 1 ? protocols[0] : nftElements(protocols);
}

function nftElements(items: readonly string[]): string {
  return `{ ${items.join(", ")} }`;
}

function nftScript(n: NormalizedSpec): { script: string; chains: Record<string, number> } {
  const table = `inet ${nftTableName(n.name)}`;
  const ip = n.family === 4 ? "ip" : "ip6";
  const addrType = n.family === 4 ? "ipv4_addr" : "ipv6_addr";
  // dsr: the tier peers' marks too, so that what the daemon hands to a peer is counted.
  const marks = [...n.targets, ...n.tierPeers].map((t) => String(t.fwmark));
  const L: string[] = [];
  const chains: Record<string, number> = {};
  const chain = (
    name: string,
    type: "filter" | "nat" | "route",
    hook: string,
    prio: string,
    rules: string[],
  ) => {
    chains[name] = rules.length;
    L.push(`\tchain ${name} {`);
    L.push(`\t\ttype ${type} hook ${hook} priority ${prio}; policy accept;`);
    for (const r of rules) L.push(`\t\t${r}`);
    L.push("\t}");
  };

  L.push(`# nflb setup ${n.name} (${n.mode}, IPv${n.family}): replaces the table atomically`);
  // "add, delete, define" in one transaction: works whether or not the table exists.
  L.push(`table ${table}`);
  L.push(`delete table ${table}`);
  L.push(`table ${table} {`);
  L.push(`\tcomment "nflb setup ${n.name} (${n.mode}); remove with: nflb teardown ${n.name}"`);
  L.push(`\tset vips {`);
  L.push(`\t\ttype ${addrType}; flags interval;`);
  L.push(`\t\telements = ${nftElements(n.vips)}`);
  L.push("\t}");
  if (n.mode !== "statistic") {
    L.push(`\tset marks {`);
    L.push("\t\ttype mark;");
    L.push(`\t\telements = ${nftElements(marks)}`);
    L.push("\t}");
  }
  if (n.snat) {
    L.push(`\tset targets {`);
    L.push(`\t\ttype ${addrType};`);
    L.push(`\t\telements = ${nftElements(n.targets.map((t) => t.address))}`);
    L.push("\t}");
  }
  for (const t of n.targets) {
    if (n.mode === "nat") L.push(`\tcounter conn_${t.fwmark} { comment "${t.address}"; }`);
    L.push(`\tcounter pkts_${t.fwmark} { comment "${t.address}"; }`);
  }
  for (const p of n.tierPeers)
    L.push(`\tcounter ${peerCounter(p.fwmark)} { comment "${p.address}"; }`);
  const pktsKey = n.mode === "dsr" ? "mark" : addrType;
  L.push(`\tmap pkts_counters {`);
  L.push(`\t\ttype ${pktsKey} : counter;`);
  L.push(
    `\t\telements = ${nftElements([
      ...n.targets.map((t) => `${n.mode === "dsr" ? t.fwmark : t.address} : "pkts_${t.fwmark}"`),
      ...n.tierPeers.map((p) => `${p.fwmark} : "${peerCounter(p.fwmark)}"`),
    ])}`,
  );
  L.push("\t}");
  if (n.mode === "nat") {
    L.push(`\tmap conn_counters {`);
    L.push("\t\ttype mark : counter;");
    L.push(
      `\t\telements = ${nftElements(n.targets.map((t) => `${t.fwmark} : "conn_${t.fwmark}"`))}`,
    );
    L.push("\t}");
    L.push(`\tmap target_addrs {`);
    L.push(`\t\ttype mark : ${addrType};`);
    L.push(`\t\telements = ${nftElements(n.targets.map((t) => `${t.fwmark} : ${t.address}`))}`);
    L.push("\t}");
  }

  if (n.mode === "nat") {
    if (n.synOnly) {
      const connmark = [
        // The daemon saw this flow's first packet: keep its choice in conntrack ...
        `${ip} daddr @vips ct state new meta mark @marks ct mark set meta mark`,
        // ... and show it on the packets that no longer go to user space.
        `ct direction original ct state established,related ${ip} daddr @vips ct mark @marks meta mark set ct mark`,
      ];
      chain("connmark_prerouting", "filter", "prerouting", "mangle + 10", connmark);
      // A route chain: a changed mark on a local packet triggers a new routing lookup.
      chain("connmark_output", "route", "output", "mangle + 10", connmark);
    }
    const dnat = [
      `${ip} daddr @vips meta mark @marks counter name meta mark map @conn_counters dnat ${ip} to meta mark map @target_addrs`,
    ];
    chain("dnat_prerouting", "nat", "prerouting", "dstnat", dnat);
    chain("dnat_output", "nat", "output", "-100", dnat);
  }
  if (n.fragments) {
    // With protocols, ICMP too: its echo requests are queued (selectors), so a large
    // ping's fragments must reach the fragment queue like those of the protocols.
    const protos =
      n.protocols.length === 0
        ? ""
        : ` meta l4proto ${nftProtocols([...n.protocols, n.family === 4 ? "icmp" : "ipv6-icmp"])}`;
    const fragment = n.family === 4 ? "ip frag-off & 0x3fff != 0" : "exthdr frag exists"; // MF or offset
    chain("fragments_prerouting", "filter", "prerouting", "-450", [
      // Before conntrack's defragmentation (-400): VIP traffic stays in pieces.
      `${ip} daddr @vips notrack`,
      `${ip} daddr @vips ${fragment}${protos} meta mark set ${FRAGMENT_MARK_HEX}`,
    ]);
  }
  if (n.mode === "dsr") {
    const count = [`${ip} daddr @vips meta mark @marks counter name meta mark map @pkts_counters`];
    chain("count_prerouting", "filter", "prerouting", "mangle + 10", count);
    chain("count_output", "filter", "output", "mangle + 10", count);
  } else {
    // After DNAT the destination is the target; the conntrack still knows the VIP.
    const count = [
      `ct direction original ct original ${ip} daddr @vips counter name ${ip} daddr map @pkts_counters`,
    ];
    chain("count_prerouting", "filter", "prerouting", "dstnat + 10", count);
    chain("count_output", "filter", "output", "-90", count);
  }
  if (n.snat) {
    chain("snat_postrouting", "nat", "postrouting", "srcnat", [
      `ct status dnat ct original ${ip} daddr @vips ${ip} daddr @targets counter masquerade`,
    ]);
  }
  L.push("}");
  return { script: `${L.join("\n")}\n`, chains };
}

export function buildPlan(n: NormalizedSpec): Plan {
  const nft = nftScript(n);
  return {
    name: n.name,
    mode: n.mode,
    family: n.family,
    nftTable: `inet ${nftTableName(n.name)}`,
    nft: nft.script,
    nftChains: nft.chains,
    iptables: {
      binary: n.family === 4 ? "iptables-nft" : "ip6tables-nft",
      tables: [iptablesPlan(n)],
    },
    ipItems: ipItems(n),
    targets: n.targets,
    ...(n.fragments ? { tun: { name: n.fragments.tun, alias: tunAlias(n.name) } } : {}),
    ...(n.tierPeers.length > 0 ? { tierPeers: n.tierPeers } : {}),
  };
}

/** Quotes an argument for iptables-restore input when it needs it. */
function restoreQuote(arg: string): string {
  return /^[A-Za-z0-9_.:,/=+-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, "\\$1")}"`;
}

/**
 * iptables-nft-restore --noflush input for one table: declaring a user chain (":NAME")
 * creates it or flushes it, so the whole chain content is replaced in one transaction.
 * Jumps are appended only when missing (`presentJumps`), so reapplying adds none twice.
 */
export function iptablesRestoreText(
  t: IptTablePlan,
  presentJumps: ReadonlySet<string> = new Set(),
): string {
  const L = [`*${t.table}`];
  for (const c of t.chains) L.push(`:${c.name} - [0:0]`);
  for (const c of t.chains) {
    for (const r of c.rules) L.push(["-A", c.name, ...r].map(restoreQuote).join(" "));
  }
  for (const j of t.jumps) {
    const line = jumpLine(j);
    if (!presentJumps.has(line)) L.push(line);
  }
  L.push("COMMIT");
  return `${L.join("\n")}\n`;
}

/** A jump exactly as iptables-save prints it. */
export function jumpLine(j: IptJump): string {
  return `-A ${j.from} -j ${j.to}`;
}

export function renderPlan(plan: Plan): RenderedSetup {
  const bin = plan.iptables.binary;
  const iptables: string[][] = [];
  for (const t of plan.iptables.tables) {
    for (const c of t.chains) iptables.push([bin, "-t", t.table, "-N", c.name]);
    for (const c of t.chains) {
      for (const r of c.rules) iptables.push([bin, "-t", t.table, "-A", c.name, ...r]);
    }
    for (const j of t.jumps) iptables.push([bin, "-t", t.table, "-A", j.from, "-j", j.to]);
  }
  return {
    nft: plan.nft,
    iptables,
    iptablesRestore: plan.iptables.tables.map((t) => iptablesRestoreText(t)).join(""),
    ipRules: [
      ...(plan.tun ? tunCommands(plan.tun, plan.family) : []),
      ...plan.ipItems.map((i) => ipItemArgs(i, "add")),
    ],
  };
}

/** Pure: validates (throws SetupError) and returns the exact rule sets setup() applies. */
export function renderSetup(spec: SetupSpec): RenderedSetup {
  return renderPlan(buildPlan(normalizeSpec(spec)));
}
