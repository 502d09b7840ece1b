// A load balancer's targets and the rules that decide which of them the Maglev table is
// built from. Pure: the edits change an array of slots in place (StateFile.update runs
// them on a copy and publishes the result, or nothing if they throw); the rules are
// functions of the slots and the all-down policy only, so whoever writes a table (the
// CLI, the service, the kernel map pusher) builds the same one.
//
// A target is in the table when it is
//   active (activate / deactivate: is it part of the service at all),
//   admin-enabled (nflb target enable|disable|drain: the operator's word, which health
//     never overrides and which survives restarts, since it lives in the state), and
//   not health-down (health checks: unknown counts as not down, so a service whose
//     checks have not answered yet is not emptied; the checker waits for first verdicts).
// When health would take every remaining candidate (active and enabled) out, the
// all-down policy decides: keep-last keeps the targets health took out last (those with
// the highest downSeq: a better guess than nothing, and what was serving a moment ago);
// none empties the table (packets then get the daemon's no-target verdict).
//
// Out of the table, drain and disable differ in what happens to established
// connections: see keepsConnections().
import { DomainError } from "../domain/errors.js";
import { type WeightRule, weightProblem } from "../domain/weight.js";
import type { AllDownPolicy, Health } from "../health/spec.js";
import type { AdminState } from "../service/status.js";

export type { AdminState, AllDownPolicy, Health };

export const ADMIN_STATES: readonly AdminState[] = ["enabled", "disabled", "drain"];
export const HEALTHS: readonly Health[] = ["unknown", "up", "down"];
export const ALL_DOWN_POLICIES: readonly AllDownPolicy[] = ["keep-last", "none"];
export const DEFAULT_ALL_DOWN_POLICY: AllDownPolicy = "keep-last";

export interface TargetSlot {
  /** Index of the slot (per-target counters are kept by slot). */
  slot: number;
  fwmark: number;
  /** 0..MAX_WEIGHT; 0 = in the set but owning no table entries (no new flows). */
  weight: number;
  /** Activated (activate / deactivate). */
  active: boolean;
  admin: AdminState;
  health: Health;
  /** When health took it out: a sequence number, higher = later; 0 = never. */
  downSeq: number;
  /**
   * In the set the published table was built from. Computed by the writer from the rules
   * above; edits need not set it (what they set is ignored).
   */
  inTable: boolean;
}

/** Load-balancer-wide properties that are published with the targets. */
export interface LbTableSettings {
  allDownPolicy: AllDownPolicy;
}

/** Why a target is in or out of the table (shown by `nflb show`). */
export type TableReason =
  | "serving" // in: active, enabled, not down
  | "kept-last" // in: health-down, kept because every candidate is down (keep-last)
  | "inactive" // out: deactivated
  | "disabled" // out: admin disabled
  | "drain" // out: admin drain
  | "down"; // out: health-down

export interface TableDecision {
  /** The targets the table is built from, in slot order. */
  members: TargetSlot[];
  /** Per fwmark, why it is in or out. */
  reasons: Map<number, TableReason>;
  /** Health took every candidate out (the all-down policy applied). */
  allDown: boolean;
}

/** Which targets the table is built from, and why each one is in or out. Pure. */
export function decideTable(targets: readonly TargetSlot[], policy: AllDownPolicy): TableDecision {
  const reasons = new Map<number, TableReason>();
  const candidates: TargetSlot[] = [];
  for (const t of targets) {
    if (!t.active) reasons.set(t.fwmark, "inactive");
    else if (t.admin === "disabled") reasons.set(t.fwmark, "disabled");
    else if (t.admin === "drain") reasons.set(t.fwmark, "drain");
    else candidates.push(t);
  }
  const up = candidates.filter((t) => t.health !== "down");
  for (const t of candidates) reasons.set(t.fwmark, t.health === "down" ? "down" : "serving");
  const allDown = candidates.length > 0 && up.length === 0;
  let members = up;
  if (allDown && policy === "keep-last") {
    const last = Math.max(...candidates.map((t) => t.downSeq));
    members = candidates.filter((t) => t.downSeq === last);
    for (const t of members) reasons.set(t.fwmark, "kept-last");
  }
  return { members: [...members].sort((a, b) => a.slot - b.slot), reasons, allDown };
}

/**
 * Whether a target's established connections should keep going to it (where nflb pins
 * connections): yes while it is in the table, and while it drains (no new flows, the
 * established ones finish); no once it is disabled, deactivated or health-down (the
 * target is gone or unwanted: its connections may move or fail). A health-down target
 * that keep-last keeps in the table keeps them too: it is all there is.
 */
export function keepsConnections(t: TargetSlot): boolean {
  if (t.inTable) return true;
  return t.active && t.admin === "drain" && t.health !== "down";
}

function unknownFwmark(fwmark: number): DomainError {
  return new DomainError(`unknown fwmark ${fwmark}: it was never activated`);
}

function findTarget(targets: TargetSlot[], fwmark: number): TargetSlot {
  const t = targets.find((x) => x.fwmark === fwmark);
  if (!t) throw unknownFwmark(fwmark);
  return t;
}

/**
 * Activates (or re-weights) targets, reusing a target's slot so its counters stay its own.
 * A target activated again keeps its admin state and health. New targets start enabled,
 * health unknown. Weight 0 (a setup's FWMARK=ADDR@0, `rule.allowZero`) keeps a target in
 * the set with no table entries: no new flows.
 */
export function activateTargets(
  targets: TargetSlot[],
  fwmarks: number[],
  weight: number,
  maxTargets: number,
  rule: WeightRule = {},
): void {
  const problem = weightProblem(weight, rule);
  if (problem !== undefined) throw new DomainError(problem);
  for (const fwmark of fwmarks) {
    const existing = targets.find((t) => t.fwmark === fwmark);
    if (existing) {
      existing.active = true;
      existing.weight = weight;
      continue;
    }
    const used = new Set(targets.map((t) => t.slot));
    let slot = 0;
    while (used.has(slot)) slot++;
    if (slot >= maxTargets) {
      // All slots taken: reuse the slot of an inactive target, if any.
      const idle = targets.findIndex((t) => !t.active);
      if (idle < 0) {
        throw new DomainError(
          `cannot activate ${fwmark}: all ${maxTargets} target slots are in use (init --N)`,
        );
      }
      slot = targets[idle].slot;
      targets.splice(idle, 1);
    }
    targets.push({
      slot,
      fwmark,
      weight,
      active: true,
      admin: "enabled",
      health: "unknown",
      downSeq: 0,
      inTable: false,
    });
  }
}

export function deactivateTargets(targets: TargetSlot[], fwmarks: number[]): void {
  for (const fwmark of fwmarks) findTarget(targets, fwmark).active = false;
}

/** Sets the admin state of known targets (active or not: it is kept for when they return). */
export function setAdmin(targets: TargetSlot[], fwmarks: number[], admin: AdminState): void {
  if (!ADMIN_STATES.includes(admin)) {
    throw new DomainError(`invalid admin state "${admin}": enabled, disabled or drain`);
  }
  const found = fwmarks.map((f) => findTarget(targets, f));
  for (const t of found) t.admin = admin;
}

export interface HealthChange {
  fwmark: number;
  health: Health;
}

/**
 * Sets the health of known targets, several in one edit (one generation). Targets that go
 * down in this edit share one downSeq, higher than every earlier one, so keep-last keeps
 * them together if they were the last. Health never touches the admin state.
 */
export function setHealth(targets: TargetSlot[], changes: readonly HealthChange[]): void {
  for (const c of changes) {
    if (!HEALTHS.includes(c.health)) {
      throw new DomainError(`invalid health "${c.health}": unknown, up or down`);
    }
  }
  const found = changes.map((c) => [findTarget(targets, c.fwmark), c.health] as const);
  const seq = Math.max(0, ...targets.map((t) => t.downSeq)) + 1;
  for (const [t, health] of found) {
    if (health === "down" && t.health !== "down") t.downSeq = seq;
    t.health = health;
  }
}

/** Sets the all-down policy (published with the next table). */
export function setAllDownPolicy(settings: LbTableSettings, policy: AllDownPolicy): void {
  if (!ALL_DOWN_POLICIES.includes(policy)) {
    throw new DomainError(`invalid all-down policy "${policy}": keep-last or none`);
  }
  settings.allDownPolicy = policy;
}

/** Checks what an edit left: slots in range and distinct, fwmarks distinct, valid values. */
export function checkTargets(targets: readonly TargetSlot[], maxTargets: number): void {
  const slots = new Set<number>();
  const marks = new Set<number>();
  for (const t of targets) {
    if (!Number.isInteger(t.slot) || t.slot < 0 || t.slot >= maxTargets || slots.has(t.slot)) {
      throw new DomainError(`target ${t.fwmark}: bad or duplicate slot ${t.slot}`);
    }
    if (marks.has(t.fwmark)) throw new DomainError(`fwmark ${t.fwmark} is listed twice`);
    slots.add(t.slot);
    marks.add(t.fwmark);
    const problem = weightProblem(t.weight, { allowZero: true });
    if (problem !== undefined) throw new DomainError(`target ${t.fwmark}: ${problem}`);
    if (!ADMIN_STATES.includes(t.admin) || !HEALTHS.includes(t.health)) {
      throw new DomainError(`target ${t.fwmark}: bad admin state or health`);
    }
  }
}
