// Reading and changing the live kernel state: nft tables, iptables-nft chains, ip rules
// and routes. Every removal here is tolerant of the object being gone already, so that a
// teardown can finish after a partial setup, a crash or a manual cleanup.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readOwnership, writeOwnership } from "./record.js";
import {
  type IpItem,
  type IptJump,
  type IptTablePlan,
  ipItemArgs,
  iptablesRestoreText,
  jumpLine,
  type Plan,
  type TunItem,
  tunCommands,
} from "./render.js";
import { run, tryRun } from "./sys.js";
import { SetupError } from "./types.js";
import { canonicalAddress, type Family, parseAddress } from "./validate.js";

type IptBinary = Plan["iptables"]["binary"];
type NftFamily = "ip" | "ip6";

export const nftFamilyOf = (bin: IptBinary): NftFamily => (bin === "iptables-nft" ? "ip" : "ip6");

// ---- nft ----------------------------------------------------------------------------

type NftObject = Record<string, Record<string, unknown>>;

/** `nft -j list ...` objects, or undefined when the table/chain does not exist. */
export function nftJson(args: readonly string[]): NftObject[] | undefined {
  const r = tryRun("nft", ["-j", ...args]);
  if (r.status !== 0) return undefined;
  const doc = JSON.parse(r.stdout) as { nftables?: NftObject[] };
  return (doc.nftables ?? []).filter((o) => !("metainfo" in o));
}

/**
 * Applies an nft script in one transaction. From a file, not a pipe: if this process dies
 * while writing a long script into nft's stdin, nft would read a truncated script, and a
 * prefix can be valid ("table ...; delete table ..." and nothing more).
 */
export function nftApply(script: string): void {
  const dir = mkdtempSync(join(tmpdir(), "nflb-nft-"));
  try {
    const file = join(dir, "rules.nft");
    writeFileSync(file, script);
    run("nft", ["-f", file]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Deletes a table if it exists ("add" first makes the delete succeed either way). */
export function nftRemoveTable(table: string): void {
  run("nft", ["-f", "-"], `table ${table}\ndelete table ${table}\n`);
}

/** Rule count per chain of a table; undefined when the table does not exist. */
export function nftChainRules(family: string, table: string): Map<string, number> | undefined {
  const objs = nftJson(["list", "table", family, table]);
  if (!objs) return undefined;
  const chains = new Map<string, number>();
  for (const o of objs) {
    if (o.chain) chains.set(String(o.chain.name), 0);
  }
  for (const o of objs) {
    if (o.rule) {
      const c = String(o.rule.chain);
      chains.set(c, (chains.get(c) ?? 0) + 1);
    }
  }
  return chains;
}

// ---- iptables-nft -------------------------------------------------------------------

export interface IptState {
  chains: Set<string>;
  /** "-A CHAIN ..." lines, counters stripped. */
  rules: string[];
}

/** The chains and rules of one iptables-nft table, as iptables-nft-save prints them. */
export function iptSave(
  bin: IptBinary,
  table: string,
  counters = false,
): IptState & { raw: string } {
  const raw = run(`${bin}-save`, ["-t", table, ...(counters ? ["-c"] : [])]);
  const chains = new Set<string>();
  const rules: string[] = [];
  for (const line of raw.split("\n")) {
    const m = /^:(\S+) /.exec(line);
    if (m) chains.add(m[1]);
    const r = /^(?:\[\d+:\d+\] )?(-A .*)$/.exec(line);
    if (r) rules.push(r[1].trimEnd());
  }
  return { chains, rules, raw };
}

/** Applies one table's chains (replacing their content) and missing jumps, atomically. */
export function iptApplyTable(bin: IptBinary, t: IptTablePlan): void {
  const present = new Set(iptSave(bin, t.table).rules);
  run(`${bin}-restore`, ["--noflush"], iptablesRestoreText(t, present));
}

/** Removes jumps (every copy) and then chains, atomically; missing ones are skipped. */
export function iptRemove(
  bin: IptBinary,
  table: string,
  chains: readonly string[],
  jumps: readonly IptJump[],
): void {
  const state = iptSave(bin, table);
  const lines: string[] = [];
  for (const j of jumps) {
    const line = jumpLine(j);
    for (const r of state.rules) if (r === line) lines.push(`-D ${j.from} -j ${j.to}`);
  }
  const present = chains.filter((c) => state.chains.has(c));
  // Flush all first: our chains may jump to each other.
  for (const c of present) lines.push(`-F ${c}`);
  for (const c of present) lines.push(`-X ${c}`);
  if (lines.length === 0) return;
  run(`${bin}-restore`, ["--noflush"], `*${table}\n${lines.join("\n")}\nCOMMIT\n`);
}

/** True when every chain holds the expected number of rules and every jump exists. */
export function iptTableIntact(bin: IptBinary, t: IptTablePlan): boolean {
  const state = iptSave(bin, t.table);
  for (const c of t.chains) {
    if (!state.chains.has(c.name)) return false;
    const n = state.rules.filter((r) => r.startsWith(`-A ${c.name} `)).length;
    if (n !== c.rules.length) return false;
  }
  return t.jumps.every((j) => state.rules.includes(jumpLine(j)));
}

/** Existing chains of an iptables-nft table (nft view); undefined if the table is absent. */
export function builtinSnapshot(bin: IptBinary, table: string): Set<string> | undefined {
  const chains = nftChainRules(nftFamilyOf(bin), table);
  return chains ? new Set(chains.keys()) : undefined;
}

/**
 * Claims the builtin chains (and the table) that applying `t` is about to make
 * iptables-nft create, before it does (intent first): iptables-nft creates a table and its
 * base chains on demand but never removes them, and an empty leftover base chain would
 * make `nft list ruleset` differ from before the setup. Written after the fact, a process
 * killed in between would leave them unclaimed and no teardown would remove them. A claim
 * on a chain that then never comes into being is dropped by cleanupBuiltins.
 */
export function claimBuiltinsToCreate(bin: IptBinary, t: IptTablePlan): void {
  const family = nftFamilyOf(bin);
  const before = builtinSnapshot(bin, t.table);
  const own = readOwnership();
  const has = (chain: string) =>
    own.chains.some((c) => c.family === family && c.table === t.table && c.chain === chain);
  let claimed = false;
  for (const chain of new Set(t.jumps.map((j) => j.from))) {
    if (before?.has(chain) || has(chain)) continue;
    own.chains.push({ family, table: t.table, chain });
    claimed = true;
  }
  if (!before && !own.tables.some((x) => x.family === family && x.table === t.table)) {
    own.tables.push({ family, table: t.table });
    claimed = true;
  }
  if (claimed) writeOwnership(own);
}

/** Deletes the builtin chains/tables nflb created once nothing uses them any more. */
export function cleanupBuiltins(): void {
  const own = readOwnership();
  const claims = own.chains.length + own.tables.length;
  own.chains = own.chains.filter((c) => {
    const count = nftChainRules(c.family, c.table)?.get(c.chain);
    if (count === undefined) return false;
    if (count > 0) return true;
    run("nft", ["delete", "chain", c.family, c.table, c.chain]);
    return false;
  });
  own.tables = own.tables.filter((t) => {
    const objs = nftJson(["list", "table", t.family, t.table]);
    if (!objs) return false;
    // Only the table object itself left: no chains, sets or other objects.
    if (objs.some((o) => !o.table)) return true;
    run("nft", ["delete", "table", t.family, t.table]);
    return false;
  });
  if (own.chains.length + own.tables.length !== claims) writeOwnership(own);
}

// ---- ip rules and routes --------------------------------------------------------------

function ipJson(args: readonly string[]): Record<string, unknown>[] | undefined {
  const r = tryRun("ip", ["-N", "-j", ...args]);
  if (r.status !== 0) return undefined;
  const text = r.stdout.trim();
  return text ? (JSON.parse(text) as Record<string, unknown>[]) : [];
}

export function sameAddress(a: unknown, b: string | undefined): boolean {
  const x = typeof a === "string" ? parseAddress(a) : undefined;
  const y = b ? parseAddress(b) : undefined;
  return !!x && !!y && canonicalAddress(x) === canonicalAddress(y);
}

/** Default routes of a routing table ([] if the table does not exist). */
export function defaultRoutes(family: 4 | 6, table: number): Record<string, unknown>[] {
  const fam = family === 4 ? "-4" : "-6";
  return ipJson([fam, "route", "show", "table", String(table), "exact", "default"]) ?? [];
}

/** Whether exactly this rule (pref, fwmark, table and nothing else) or route exists. */
export function ipItemPresent(item: IpItem): boolean {
  if (item.kind === "route") {
    return defaultRoutes(item.family, item.table).some((r) => sameAddress(r.gateway, item.via));
  }
  const rules = ipJson([item.family === 4 ? "-4" : "-6", "rule", "show"]) ?? [];
  const allowed = new Set(["priority", "src", "fwmark", "table"]);
  return rules.some(
    (r) =>
      r.priority === item.pref &&
      r.src === "all" &&
      Number(r.fwmark) === item.fwmark &&
      r.table === String(item.table) &&
      Object.keys(r).every((k) => allowed.has(k)),
  );
}

export function ipItemAdd(item: IpItem): void {
  const [cmd, ...args] = ipItemArgs(item, "add");
  run(cmd, args);
}

/** Points the table's default route at another gateway (a dsr target changed address). */
export function ipRouteReplace(item: IpItem): void {
  const [cmd, ...args] = ipItemArgs(item, "replace");
  run(cmd, args);
}

export function ipItemRemove(item: IpItem): void {
  if (!ipItemPresent(item)) return;
  const [cmd, ...args] = ipItemArgs(item, "del");
  run(cmd, args);
}

// ---- the TUN device of --fragments ----------------------------------------------------

export interface LinkState {
  /** linkinfo kind ("tun", "veth", ...); undefined for devices without one (lo). */
  kind?: string;
  /** IFLA_IFALIAS, "" when unset. */
  alias: string;
  up: boolean;
  addrGenMode?: string;
}

/** A network device of this namespace, or undefined when there is none of that name. */
export function linkState(name: string): LinkState | undefined {
  const links = ipJson(["-d", "link", "show", "dev", name]);
  const l = links?.[0];
  if (!l || l.ifname !== name) return undefined;
  const info = l.linkinfo as { info_kind?: string } | undefined;
  return {
    kind: info?.info_kind,
    alias: typeof l.ifalias === "string" ? l.ifalias : "",
    up: Array.isArray(l.flags) && l.flags.includes("UP"),
    addrGenMode: typeof l.inet6_addr_gen_mode === "string" ? l.inet6_addr_gen_mode : undefined,
  };
}

/**
 * This setup's TUN device: a tun with its alias, or (a setup that died between
 * `ip tuntap add` and `ip link set alias`) a tun without any alias.
 */
function isOurTun(st: LinkState | undefined, tun: TunItem, allowUnaliased: boolean): boolean {
  return st?.kind === "tun" && (st.alias === tun.alias || (allowUnaliased && st.alias === ""));
}

const rpFilterPath = (dev: string) => `/proc/sys/net/ipv4/conf/${dev}/rp_filter`;

/** Whether the TUN device exists as setup leaves it (ours, up, settings in place). */
export function tunIntact(tun: TunItem, family: Family): boolean {
  const st = linkState(tun.name);
  if (!st || !isOurTun(st, tun, false) || !st.up || st.addrGenMode !== "none") return false;
  if (family !== 4) return true;
  try {
    return readFileSync(rpFilterPath(tun.name), "utf8").trim() === "0";
  } catch {
    return false;
  }
}

/**
 * Creates the TUN device, or keeps the one an earlier run of this setup made, and
 * (re)applies its settings. Returns true when it was created now. A device of that name
 * that is not ours is an error (preflight reports it first).
 */
export function tunEnsure(tun: TunItem, family: Family): boolean {
  const st = linkState(tun.name);
  if (st && !isOurTun(st, tun, false)) {
    throw new SetupError(
      `network device ${tun.name} exists and is not this setup's TUN device (alias "${st.alias}")`,
    );
  }
  const [create, ...configure] = tunCommands(tun, family);
  if (!st) run(create[0], create.slice(1));
  try {
    for (const cmd of configure) {
      if (cmd[0] === "sysctl") {
        // Same effect as the rendered sysctl command, without needing procps.
        writeFileSync(rpFilterPath(tun.name), "0");
      } else run(cmd[0], cmd.slice(1));
    }
  } catch (err) {
    if (!st) tunRemove(tun);
    throw err instanceof SetupError
      ? err
      : new SetupError(`configuring ${tun.name} failed: ${(err as Error).message}`);
  }
  return !st;
}

/** Deletes the TUN device if it is there and ours; anything else of that name stays. */
export function tunRemove(tun: TunItem): void {
  if (!isOurTun(linkState(tun.name), tun, true)) return;
  run("ip", ["link", "del", "dev", tun.name]);
}
