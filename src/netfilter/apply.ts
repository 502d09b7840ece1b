// setup() and teardown(): preflight, apply in steps with an undo stack, record.
//
// Order of a setup: every check (preflight) first; the record, "applying" with the new
// plan and the earlier one, before the first change (so that a teardown after a crash
// anywhere removes everything); then (1) dsr routes and rules, and the TUN device of
// --fragments, (2) the nft table in one transaction, (3) the iptables-nft chains and
// jumps in one iptables-nft-restore, whose builtin chains are claimed before they exist,
// (4) the companion (the Maglev state of `nflb setup`), (5) the record "applied": the
// commit; (6) removal of what an earlier setup of the same name had and this one has not.
// Queueing/marking starts with step 3, so by then everything that acts on a mark exists.
// The undo of each change is registered before the change: a failure in 1-5 (also half-way
// through a step) undoes what was done, in reverse, back to the previous state (nothing,
// or the earlier setup).
import { existsSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { isOperationFault, withOperationFault } from "./faults.js";
import {
  claimBuiltinsToCreate,
  cleanupBuiltins,
  defaultRoutes,
  ipItemAdd,
  ipItemPresent,
  ipItemRemove,
  ipRouteReplace,
  iptApplyTable,
  iptRemove,
  iptTableIntact,
  linkState,
  nftApply,
  nftChainRules,
  nftRemoveTable,
  sameAddress,
  tunEnsure,
  tunIntact,
  tunRemove,
} from "./live.js";
import {
  netnsId,
  readRecord,
  removeRecord,
  type SetupRecord,
  withNetnsLock,
  writeRecord,
} from "./record.js";
import { buildPlan, ipItemArgs, ipItemKey, type Plan, renderPlan } from "./render.js";
import { findTool, hasNetAdmin, readSysctl, tryRun } from "./sys.js";
import { SetupError, type SetupOptions, type SetupSpec, type TeardownOptions } from "./types.js";
import { NAME_PATTERN, type NormalizedSpec, normalizeSpec, parseAddress } from "./validate.js";

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

// ---- preflight ------------------------------------------------------------------------

function requireTools(plan: Plan): void {
  const bin = plan.iptables.binary;
  const missing = ["nft", "ip", bin, `${bin}-save`, `${bin}-restore`].filter((t) => !findTool(t));
  if (missing.length > 0) {
    throw new SetupError(
      `missing tools: ${missing.join(", ")} (Debian: apt-get install nftables iptables iproute2)`,
    );
  }
}

/** Loads the iptables rules into a throwaway network namespace: the kernel's own answer. */
function probeIptables(plan: Plan): void {
  const bin = plan.iptables.binary;
  const restore = findTool(`${bin}-restore`) as string;
  const text = renderPlan(plan).iptablesRestore;
  if (findTool("unshare") && tryRun("unshare", ["--net", "--", "true"]).status === 0) {
    const r = tryRun("unshare", ["--net", "--", restore, "--noflush"], text);
    if (r.status !== 0) {
      throw new SetupError(
        `the kernel refuses the iptables rules (missing NFQUEUE/statistic/multiport/conntrack support?): ${r.stderr.trim()}`,
      );
    }
    return;
  }
  // No namespace to try them in (no CAP_SYS_ADMIN): at least let iptables parse them.
  const r = tryRun(`${bin}-restore`, ["--test", "--noflush"], text);
  if (r.status !== 0) throw new SetupError(`iptables rejects the rules: ${r.stderr.trim()}`);
}

function checkDsrTargets(plan: Plan, previous: readonly Plan[]): void {
  const ours = new Set(previous.flatMap((p) => p.ipItems.map(ipItemKey)));
  const peers = new Set(plan.tierPeers?.map((p) => p.fwmark));
  for (const item of plan.ipItems) {
    if (ours.has(ipItemKey(item))) continue;
    const role = peers.has(item.fwmark) ? "tier peer" : "dsr target";
    if (item.kind === "route") {
      const fam = item.family === 4 ? "-4" : "-6";
      const r = tryRun("ip", ["-j", fam, "route", "get", item.via ?? ""]);
      const route = r.status === 0 ? (JSON.parse(r.stdout)[0] as Record<string, unknown>) : {};
      if (r.status !== 0 || route.gateway !== undefined || !route.dev) {
        throw new SetupError(
          `${role} ${item.via} is not on a directly connected network here (dsr forwards to it at layer 2): ${
            r.status === 0 ? `route goes via ${String(route.gateway)}` : r.stderr.trim()
          }`,
        );
      }
      // A default route an earlier setup of this name put there is ours to replace.
      const earlier = previous
        .flatMap((p) => p.ipItems)
        .filter((i) => i.kind === "route" && i.family === item.family && i.table === item.table);
      const existing = defaultRoutes(item.family, item.table).filter(
        (r) => !earlier.some((i) => sameAddress(r.gateway, i.via)),
      );
      if (existing.length > 0) {
        throw new SetupError(
          `routing table ${item.table} (fwmark ${item.fwmark}, ${role} ${item.via}) already has a default route (${JSON.stringify(existing[0])}); choose other fwmarks or remove it`,
        );
      }
    } else if (ipItemPresent(item)) {
      throw new SetupError(
        `"${ipItemArgs(item, "add").join(" ")}" exists already but not from this setup; remove it or choose other fwmarks`,
      );
    }
  }
}

/** The TUN device must not exist, unless it is this setup's own (from an earlier run). */
function checkTun(plan: Plan): void {
  if (!plan.tun) return;
  if (!existsSync("/dev/net/tun")) {
    throw new SetupError(
      "--fragments needs a TUN device, and /dev/net/tun is missing (CONFIG_TUN; modprobe tun)",
    );
  }
  const st = linkState(plan.tun.name);
  if (st && !(st.kind === "tun" && st.alias === plan.tun.alias)) {
    throw new SetupError(
      `network device ${plan.tun.name} exists already and is not this setup's TUN device (${
        st.kind ?? "no kind"
      }${st.alias ? `, alias "${st.alias}"` : ""}): choose another --frag-tun`,
    );
  }
}

function warnings(n: NormalizedSpec, warn: (m: string) => void): void {
  const key = n.family === 4 ? "net.ipv4.ip_forward" : "net.ipv6.conf.all.forwarding";
  if (readSysctl(key) === "0") {
    warn(`${key} is 0: only traffic originated on this host will reach the targets`);
  }
  const first = n.vips[0].split("/")[0];
  if (tryRun("ip", ["route", "get", first]).status !== 0) {
    warn(
      `no route to ${first}: connections originated on this host fail before netfilter sees them (a default route is enough)`,
    );
  }
  if (n.mode === "dsr") {
    const local = tryRun("ip", [
      "-j",
      n.family === 4 ? "-4" : "-6",
      "route",
      "show",
      "table",
      "local",
    ]);
    const routes = local.status === 0 ? (JSON.parse(local.stdout) as { dst?: string }[]) : [];
    for (const vip of n.vips) {
      const [addr, len] = vip.split("/");
      const v = parseAddress(addr);
      const hit = routes.find((r) => {
        const a = r.dst ? parseAddress(r.dst.split("/")[0]) : undefined;
        return !!a && !!v && a.kind() === v.kind() && a.match(v, Number(len));
      });
      if (hit) {
        warn(
          `VIP ${vip} is a local address here (${hit.dst}): the local routing table wins over the fwmark rules, so dsr will not forward it`,
        );
      }
    }
  }
  // The kernel uses the larger of "all" and the device's value: strict wins over our 0.
  if (n.fragments && n.family === 4 && readSysctl("net.ipv4.conf.all.rp_filter") === "1") {
    warn(
      `net.ipv4.conf.all.rp_filter is 1 (strict) and overrides ${n.fragments.tun}'s 0: re-injected fragments (client source, arriving on ${n.fragments.tun}) will be dropped; set it to 0 or 2 (loose)`,
    );
  }
}

function preflight(
  n: NormalizedSpec,
  plan: Plan,
  previous: readonly Plan[],
  warn: (m: string) => void,
): void {
  requireTools(plan);
  const check = tryRun("nft", ["-c", "-f", "-"], plan.nft);
  if (check.status !== 0) {
    throw new SetupError(`nft (check mode) rejects the rule set: ${check.stderr.trim()}`);
  }
  probeIptables(plan);
  checkDsrTargets(plan, previous);
  checkTun(plan);
  warnings(n, warn);
}

// ---- plan objects ---------------------------------------------------------------------

const chainKey = (p: Plan, table: string, chain: string) =>
  `${p.iptables.binary}/${table}/${chain}`;
const jumpKey = (p: Plan, table: string, from: string, to: string) =>
  `${p.iptables.binary}/${table}/${from}->${to}`;

/** Removes the iptables chains and jumps of `plan` that `keep` does not have. */
function iptRemovePlan(plan: Plan, keep?: Plan): void {
  const kept = new Set<string>();
  for (const t of keep?.iptables.tables ?? []) {
    for (const c of t.chains) kept.add(chainKey(keep as Plan, t.table, c.name));
    for (const j of t.jumps) kept.add(jumpKey(keep as Plan, t.table, j.from, j.to));
  }
  for (const t of plan.iptables.tables) {
    iptRemove(
      plan.iptables.binary,
      t.table,
      t.chains.map((c) => c.name).filter((c) => !kept.has(chainKey(plan, t.table, c))),
      t.jumps.filter((j) => !kept.has(jumpKey(plan, t.table, j.from, j.to))),
    );
  }
}

function iptApplyPlan(plan: Plan): void {
  for (const t of plan.iptables.tables) {
    claimBuiltinsToCreate(plan.iptables.binary, t);
    iptApplyTable(plan.iptables.binary, t);
  }
}

/** Whether everything of the plan is in place (then setting it up again changes nothing). */
function planIntact(plan: Plan): boolean {
  const [family, table] = plan.nftTable.split(" ");
  const chains = nftChainRules(family, table);
  if (!chains || !isDeepStrictEqual(Object.fromEntries(chains), plan.nftChains)) return false;
  if (!plan.iptables.tables.every((t) => iptTableIntact(plan.iptables.binary, t))) return false;
  if (plan.tun && !tunIntact(plan.tun, plan.family)) return false;
  return plan.ipItems.every(ipItemPresent);
}

/** Removes everything of the plans (tolerant); returns the problems met. */
function removePlans(plans: readonly Plan[], keep?: Plan): string[] {
  const problems: string[] = [];
  const attempt = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (err) {
      problems.push(`${what}: ${message(err)}`);
    }
  };
  const keptItems = new Set(keep?.ipItems.map(ipItemKey) ?? []);
  for (const plan of plans) {
    // Traffic stops being queued/balanced first, then what acts on marks goes.
    attempt("iptables", () => iptRemovePlan(plan, keep));
    if (plan.nftTable !== keep?.nftTable) attempt("nft", () => nftRemoveTable(plan.nftTable));
    for (const item of [...plan.ipItems].reverse()) {
      if (!keptItems.has(ipItemKey(item))) attempt(ipItemKey(item), () => ipItemRemove(item));
    }
    const tun = plan.tun;
    if (tun && tun.name !== keep?.tun?.name) attempt(`tun ${tun.name}`, () => tunRemove(tun));
  }
  attempt("builtin chains", cleanupBuiltins);
  return problems;
}

interface Undo {
  what: string;
  fn: () => void;
}

/** Runs the undo stack, newest first; returns the problems met. */
function rollBack(undo: Undo[]): string[] {
  const problems: string[] = [];
  for (const u of undo.splice(0).reverse()) {
    try {
      u.fn();
    } catch (e) {
      problems.push(`${u.what}: ${message(e)}`);
    }
  }
  return problems;
}

type StepFault = "after-ip" | "after-nft" | "after-iptables";

/** The between-steps faults of FaultPoint (operation faults strike in faults.ts). */
function stepFault(failAt: SetupOptions["failAt"], point: StepFault): void {
  if (failAt === point) throw new SetupError(`injected failure (${point})`);
  // As if the process died here: no rollback, the record says "applying".
  if (failAt === `exit-${point}`) process.exit(70);
}

/**
 * Steps 1-3. The undo of each change is registered before the change is made: a step
 * that fails half-way (or a tool that fails after taking effect) is undone too, and every
 * undo tolerates finding its change not made.
 */
function applySteps(
  plan: Plan,
  previous: Plan | undefined,
  undo: Undo[],
  failAt: SetupOptions["failAt"],
): void {
  const kept = new Set(previous?.ipItems.map(ipItemKey) ?? []);
  for (const item of plan.ipItems) {
    if (kept.has(ipItemKey(item)) && ipItemPresent(item)) continue;
    // Same table, other gateway: a target of the earlier setup changed its address.
    const earlier = previous?.ipItems.find(
      (i) =>
        i.kind === "route" &&
        item.kind === "route" &&
        i.family === item.family &&
        i.table === item.table,
    );
    if (earlier && ipItemPresent(earlier)) {
      undo.push({ what: ipItemKey(item), fn: () => ipRouteReplace(earlier) });
      ipRouteReplace(item);
      continue;
    }
    // Not there before (preflight refuses one that is not ours): removing it is exact.
    undo.push({ what: ipItemKey(item), fn: () => ipItemRemove(item) });
    ipItemAdd(item);
  }
  const tun = plan.tun;
  // An existing one is this setup's own (preflight): kept, also on rollback.
  if (tun && !linkState(tun.name)) undo.push({ what: `tun ${tun.name}`, fn: () => tunRemove(tun) });
  if (tun) tunEnsure(tun, plan.family);
  stepFault(failAt, "after-ip");

  undo.push({
    what: "nft",
    fn: () =>
      previous?.nftTable === plan.nftTable ? nftApply(previous.nft) : nftRemoveTable(plan.nftTable),
  });
  nftApply(plan.nft);
  stepFault(failAt, "after-nft");

  undo.push({
    what: "iptables",
    fn: () => {
      iptRemovePlan(plan, previous);
      if (previous) iptApplyPlan(previous);
      cleanupBuiltins();
    },
  });
  iptApplyPlan(plan);
  stepFault(failAt, "after-iptables");
}

/**
 * A setup that is already in place: nothing to change in the rules, so only the companion
 * runs (undone on failure) and a changed spec (same rules) is recorded.
 */
function keepSetup(old: SetupRecord, spec: SetupSpec, options: SetupOptions): void {
  const undo: Undo[] = [];
  try {
    options.companion?.((what, fn) => undo.push({ what, fn }));
    if (!isDeepStrictEqual(old.spec, spec)) {
      undo.push({ what: "record", fn: () => writeRecord(old) });
      writeRecord({ ...old, spec, updatedAt: now() });
    }
  } catch (err) {
    const problems = rollBack(undo);
    if (problems.length > 0) {
      throw new SetupError(
        `setup "${old.name}" failed (${message(err)}) and its rollback is incomplete (${problems.join("; ")})`,
      );
    }
    throw err instanceof SetupError ? err : new SetupError(message(err));
  }
}

// ---- API ------------------------------------------------------------------------------

/**
 * Preflight, apply, record (async only because it may wait for another setup's lock).
 * Running it again with the same spec changes nothing (counters keep counting); with a
 * changed spec it replaces the earlier rules. On failure nothing of this call is left
 * (the earlier setup of the same name, if any, is put back) and a SetupError is thrown.
 *
 * Order: every check before the first change; the record ("applying", listing the new
 * plan and the earlier one) before the first change, so that a teardown after a crash
 * at any point removes all of it; the rules with an undo stack; the companion (the
 * Maglev state); the record "applied" (the commit); only then the earlier setup's
 * leftovers go.
 */
export async function setup(spec: SetupSpec, options: SetupOptions = {}): Promise<void> {
  const n = normalizeSpec(spec);
  const plan = buildPlan(n);
  const warn = options.warn ?? ((m: string) => process.stderr.write(`nflb: warning: ${m}\n`));
  // Before the lock, which already writes under /run.
  if (!hasNetAdmin()) {
    throw new SetupError("nflb setup needs root (CAP_NET_ADMIN in this network namespace)");
  }
  const fault = isOperationFault(options.failAt) ? options.failAt : undefined;
  await withNetnsLock(() =>
    withOperationFault(fault, () => {
      const old = readRecord(n.name);
      const complete = old?.state === "applied" && old.plans.length === 1;
      if (old && complete && isDeepStrictEqual(old.plans[0], plan) && planIntact(plan)) {
        keepSetup(old, spec, options);
        return;
      }
      // An interrupted or failed earlier run is not restored on failure: it is cleared.
      const previous = complete ? old.plans[0] : undefined;
      preflight(n, plan, old?.plans ?? [], warn);
      if (old && !complete) {
        const problems = removePlans(old.plans);
        if (problems.length > 0) {
          throw new SetupError(
            `an earlier incomplete setup "${n.name}" could not be removed: ${problems.join("; ")}`,
          );
        }
      }
      const base = { version: 1 as const, name: n.name, netns: netnsId(), spec };
      const both = previous ? [plan, previous] : [plan];
      const undo: Undo[] = [
        { what: "record", fn: () => (previous && old ? writeRecord(old) : removeRecord(n.name)) },
      ];
      try {
        // Written first: if this process dies half-way, teardown still knows everything.
        writeRecord({ ...base, state: "applying", plans: both, updatedAt: now() });
        applySteps(plan, previous, undo, options.failAt);
        options.companion?.((what, fn) => undo.push({ what, fn }));
        // The commit: from here on the new setup stands.
        writeRecord({ ...base, state: "applied", plans: both, updatedAt: now() });
      } catch (err) {
        const problems = rollBack(undo);
        if (problems.length > 0) {
          writeRecord({ ...base, state: "failed", plans: both, updatedAt: now() });
          throw new SetupError(
            `setup "${n.name}" failed (${message(err)}) and the rollback is incomplete (${problems.join("; ")}); run: nflb teardown ${n.name}`,
          );
        }
        throw new SetupError(`setup "${n.name}" failed and was rolled back: ${message(err)}`);
      }
      if (!previous) return;
      const leftovers = removePlans([previous], plan);
      if (leftovers.length > 0) {
        // Unremoved leftovers stay on record, so that teardown retries them.
        warn(`some rules of the previous setup "${n.name}" remain: ${leftovers.join("; ")}`);
        return;
      }
      try {
        writeRecord({ ...base, state: "applied", plans: [plan], updatedAt: now() });
      } catch (err) {
        // The record still lists the earlier plan too: teardown removes both; no harm.
        warn(`could not record setup "${n.name}" as complete: ${message(err)}`);
      }
    }),
  );
}

/**
 * Removes exactly what the recorded setup added (async because of the lock). Returns false
 * if there is no setup of that name in this network namespace.
 */
export async function teardown(name: string, options: TeardownOptions = {}): Promise<boolean> {
  if (!NAME_PATTERN.test(name)) throw new SetupError(`invalid setup name "${name}"`);
  if (!hasNetAdmin()) throw new SetupError("nflb teardown needs root (CAP_NET_ADMIN)");
  return withNetnsLock(() =>
    withOperationFault(options.failAt, () => {
      const rec = readRecord(name);
      if (!rec) return false;
      const problems = removePlans(rec.plans);
      if (problems.length > 0) {
        writeRecord({ ...rec, state: "failed", updatedAt: now() });
        throw new SetupError(`teardown "${name}" incomplete: ${problems.join("; ")}`);
      }
      removeRecord(name);
      return true;
    }),
  );
}

/** The spec of the setup recorded in this network namespace (sync). */
export function readSetupRecord(name: string): SetupSpec | undefined {
  if (!NAME_PATTERN.test(name)) return undefined;
  return readRecord(name)?.spec;
}

/** The whole record, for `nflb show`-like commands (sync). */
export function readSetupDetails(name: string): SetupRecord | undefined {
  if (!NAME_PATTERN.test(name)) return undefined;
  return readRecord(name);
}

function now(): string {
  return new Date().toISOString();
}
