// One service, provisioned all or nothing: the netfilter rules of `nflb setup` and, in the
// daemon modes (nat, dsr), the load balancer's Maglev state with exactly the service's
// targets active. The CLI's `setup` and the config file's `apply` both come here.
//
// Order: every check first (the spec, the state: damage, settings, free target slots, the
// tier's own fwmark; then the rules' preflight), before anything changes. Then the rules,
// and, inside the same transaction, the state; a failure at any point undoes both: the
// earlier rules of the service are put back and the state's targets are restored (a state
// created by this call is removed). A process killed half-way leaves a record from which
// `teardown` removes every rule (the state, as always, stays until `nflb delete`).
import { isDeepStrictEqual } from "node:util";
import { DEFAULT_TABLE_SIZE, normalizeTableSize } from "../maglev/table-size.js";
import {
  buildPlan,
  normalizeSpec,
  operation,
  readSetupDetails,
  type SetupOptions,
  type SetupSpec,
  type SetupTarget,
  setup,
  type TeardownOptions,
  teardown,
  validateSpec,
} from "../netfilter/index.js";
import {
  activateTargets,
  checkSettings,
  DEFAULT_MAX_TARGETS,
  deactivateTargets,
  deleteState,
  initState,
  type LbConfig,
  openState,
  type TargetSlot,
  tryOpenState,
} from "../state/store.js";

/** A precondition of a service failed; nothing was changed. */
export class ServiceError extends Error {
  override name = "ServiceError";
}

/** The settings of a Maglev state that `nflb init` takes (all but the name). */
export type StateSettings = Omit<LbConfig, "name">;

export interface ServiceSpec {
  /** The rules (and the service's name, which is also the state's). */
  setup: SetupSpec;
  /**
   * nat/dsr: create the Maglev state if it does not exist and make its active targets
   * exactly `setup.targets`, with their weights (others are deactivated). false: the
   * rules only (`nflb setup --no-activate`). Default true. statistic mode has no state.
   */
  activate?: boolean;
  /**
   * For a state created now: its settings (defaults: M 65537, N max(100, targets), no own
   * fwmark, seed 0, SCTP ports-only, no SCTP encapsulation port). For an existing state,
   * each setting given here must match it (changing M or N needs `nflb delete`).
   */
  state?: Partial<StateSettings>;
}

/** What provisioning a service would change in its state (computed without changing it). */
export interface StatePlan {
  /** The state does not exist yet and is created with these settings. */
  create?: StateSettings;
  /** Fwmarks newly activated, re-activated or re-weighted. */
  activate: number[];
  /** Active fwmarks that the service no longer lists. */
  deactivate: number[];
}

export interface ServicePlan {
  /** The rules differ from the recorded setup of this name (or there is none). */
  rulesChange: boolean;
  /** Absent when the service has no state (statistic, or activate: false). */
  state?: StatePlan;
}

export interface ProvisionOptions {
  /** Receives each warning as it comes (they are also in the result). Default: none. */
  warn?: (message: string) => void;
  /** Test-only fault injection. */
  failAt?: SetupOptions["failAt"];
}

export interface ProvisionResult {
  /** Absent when the service has no state. */
  state?: StatePlan;
  /**
   * Non-fatal findings: forwarding disabled, no route to a VIP, rules of the earlier setup
   * that could not be removed (they stay on record; teardown retries them).
   */
  warnings: string[];
}

export interface RemoveOptions {
  /** Also delete the service's Maglev state (default: it stays, as after `nflb teardown`). */
  deleteState?: boolean;
  /** Test-only fault injection (the rules' teardown). */
  failAt?: TeardownOptions["failAt"];
}

const usesState = (s: ServiceSpec): boolean => s.setup.mode !== "statistic" && s.activate !== false;

/** The settings a state created for this service gets. */
export function stateSettings(s: ServiceSpec): StateSettings {
  return {
    tableSize: s.state?.tableSize ?? DEFAULT_TABLE_SIZE,
    maxTargets: s.state?.maxTargets ?? Math.max(DEFAULT_MAX_TARGETS, s.setup.targets.length),
    ownFwmark: s.state?.ownFwmark ?? 0,
    hashSeed: s.state?.hashSeed ?? 0,
    sctpPortsOnly: s.state?.sctpPortsOnly ?? true,
    sctpEncapPort: s.state?.sctpEncapPort ?? 0,
  };
}

/**
 * Pure: edits `targets` (a copy of the state's slots) so that exactly `wanted` are active,
 * with their weights; returns what changed. Throws the state's error (e.g. no free slot).
 * Deactivation first: a left-out target's slot is free for a new one.
 */
export function setServiceTargets(
  targets: TargetSlot[],
  wanted: readonly SetupTarget[],
  maxTargets: number,
): Pick<StatePlan, "activate" | "deactivate"> {
  const keep = new Set(wanted.map((t) => t.fwmark));
  const deactivate = targets.filter((t) => t.active && !keep.has(t.fwmark)).map((t) => t.fwmark);
  deactivateTargets(targets, deactivate);
  const current = new Map(targets.map((t) => [t.fwmark, t]));
  const activate = wanted
    .filter((w) => {
      const t = current.get(w.fwmark);
      return !(t?.active && t.weight === w.weight);
    })
    .map((w) => w.fwmark);
  const changing = new Set(activate);
  // One activateTargets per weight; all of them inside one update: one new generation.
  const byWeight = new Map<number, number[]>();
  for (const t of wanted) {
    if (changing.has(t.fwmark))
      byWeight.set(t.weight, [...(byWeight.get(t.weight) ?? []), t.fwmark]);
  }
  // Weight 0 (allowed by setup): active with no share of new flows.
  for (const [weight, fwmarks] of byWeight) {
    activateTargets(targets, fwmarks, weight, maxTargets, { allowZero: true });
  }
  return { activate, deactivate };
}

const copySlots = (targets: readonly TargetSlot[]): TargetSlot[] => targets.map((t) => ({ ...t }));

/** The settings given for the service that an existing state does not have. */
function settingsMismatch(s: ServiceSpec, config: LbConfig): string[] {
  const wanted = s.state ?? {};
  const out: string[] = [];
  for (const key of Object.keys(wanted) as (keyof StateSettings)[]) {
    let value = wanted[key];
    if (value === undefined) continue;
    if (key === "tableSize") value = normalizeTableSize(value as number).size;
    if (config[key] !== value) out.push(`${key} ${String(config[key])}, not ${String(value)}`);
  }
  return out;
}

/** A tier peer is another instance: this one's own fwmark (init --ownfw) is not one. */
function checkTierPeers(spec: SetupSpec, ownFwmark: number): void {
  if (ownFwmark !== 0 && spec.tierPeers?.some((p) => p.fwmark === ownFwmark)) {
    throw new ServiceError(
      `--tier-peer ${ownFwmark}=...: ${ownFwmark} is this instance's own fwmark (nflb init --ownfw); list only the other instances`,
    );
  }
}

/** Reads the state (if any) and works out its change; throws ServiceError if impossible. */
function planState(s: ServiceSpec): StatePlan | undefined {
  // Without a state part, the state matters only for the tier's own fwmark.
  if (!usesState(s) && !s.setup.tierPeers) return undefined;
  const name = s.setup.name;
  const fail = (err: unknown): never => {
    throw new ServiceError(
      `load balancer "${name}": ${(err as Error).message}; nothing was changed`,
    );
  };
  let state: ReturnType<typeof tryOpenState>;
  try {
    state = tryOpenState(name);
  } catch (err) {
    fail(err);
  }
  if (!state) {
    const settings = stateSettings(s);
    checkTierPeers(s.setup, settings.ownFwmark);
    if (!usesState(s)) return undefined;
    try {
      checkSettings({ name, ...settings });
      return { create: settings, ...setServiceTargets([], s.setup.targets, settings.maxTargets) };
    } catch (err) {
      return fail(err);
    }
  }
  try {
    checkTierPeers(s.setup, state.config.ownFwmark);
    if (!usesState(s)) return undefined;
    const mismatch = settingsMismatch(s, state.config);
    if (mismatch.length > 0) {
      throw new ServiceError(
        `load balancer "${name}" exists with other settings (${mismatch.join("; ")}): run "nflb delete --name ${name}" first`,
      );
    }
    const targets = copySlots(state.snapshot().targets);
    return setServiceTargets(targets, s.setup.targets, state.config.maxTargets);
  } catch (err) {
    if (err instanceof ServiceError) throw err;
    return fail(err);
  } finally {
    state.close();
  }
}

/**
 * Whether setting up `spec` would change rules: no complete recorded setup of its name,
 * or one of other rules (the plans compared as recorded, i.e. as JSON). Whether the
 * recorded rules are still intact in the kernel, only the setup itself checks.
 */
function rulesChange(spec: SetupSpec): boolean {
  const rec = readSetupDetails(spec.name);
  if (rec?.state !== "applied" || rec.plans.length !== 1) return true;
  const plan = JSON.parse(JSON.stringify(buildPlan(normalizeSpec(spec))));
  return !isDeepStrictEqual(rec.plans[0], plan);
}

/**
 * What provisioning would change, without changing anything: validates the spec (throws
 * SetupError) and checks the state part (throws ServiceError). The rules' own preflight
 * (tools, kernel support, foreign objects) runs only in provisionService.
 */
export function planService(s: ServiceSpec): ServicePlan {
  validateSpec(s.setup);
  const state = planState(s);
  return {
    rulesChange: rulesChange(s.setup),
    ...(state ? { state } : {}),
  };
}

/**
 * Inside the rules' transaction: creates the state if needed and sets its targets. Each
 * undo is registered before its change. Recomputed under the state's lock, so a change
 * made meanwhile by another command is neither lost nor a reason for a wrong result.
 */
function applyState(s: ServiceSpec, onUndo: (what: string, undo: () => void) => void): StatePlan {
  const name = s.setup.name;
  let create: StateSettings | undefined;
  if (!tryOpenStateClosed(name)) {
    create = stateSettings(s);
    const settings = create;
    onUndo("state", () => deleteState(name));
    operation("state init", () => initState({ name, ...settings }));
  }
  const state = openState(name);
  try {
    const before = copySlots(state.snapshot().targets);
    const preview = setServiceTargets(copySlots(before), s.setup.targets, state.config.maxTargets);
    if (preview.activate.length === 0 && preview.deactivate.length === 0) {
      return { ...(create ? { create } : {}), ...preview };
    }
    if (!create) onUndo("state targets", () => restoreTargets(name, before));
    let changed = preview;
    operation("state update", () =>
      state.update((targets) => {
        changed = setServiceTargets(targets, s.setup.targets, state.config.maxTargets);
      }),
    );
    return { ...(create ? { create } : {}), ...changed };
  } finally {
    state.close();
  }
}

function tryOpenStateClosed(name: string): boolean {
  const state = tryOpenState(name);
  state?.close();
  return state !== undefined;
}

/** Puts the target slots back as they were (same slots, weights, flags: the same table). */
function restoreTargets(name: string, before: readonly TargetSlot[]): void {
  const state = openState(name);
  try {
    state.update((targets) => {
      targets.splice(0, targets.length, ...copySlots(before));
    });
  } finally {
    state.close();
  }
}

/**
 * Provisions one service, all or nothing (see the top of this file). Throws SetupError
 * for a bad spec or a failed (rolled back) setup, ServiceError for a failed state
 * precondition; in both cases the rules and the state are as they were before the call.
 */
export async function provisionService(
  s: ServiceSpec,
  options: ProvisionOptions = {},
): Promise<ProvisionResult> {
  validateSpec(s.setup);
  planState(s);
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    options.warn?.(m);
  };
  let state: StatePlan | undefined;
  await setup(s.setup, {
    warn,
    ...(options.failAt ? { failAt: options.failAt } : {}),
    ...(usesState(s)
      ? {
          companion: (onUndo: (what: string, undo: () => void) => void) => {
            state = applyState(s, onUndo);
          },
        }
      : {}),
  });
  return { ...(state ? { state } : {}), warnings };
}

/**
 * Removes the service's rules (exactly what setup added) and, if asked, its state.
 * Returns what was there to remove.
 */
export async function removeService(
  name: string,
  options: RemoveOptions = {},
): Promise<{ rules: boolean; state: boolean }> {
  const rules = await teardown(name, options.failAt ? { failAt: options.failAt } : {});
  const state = options.deleteState === true && deleteState(name);
  return { rules, state };
}
