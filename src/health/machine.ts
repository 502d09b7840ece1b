// The health of one target as a pure state machine: results and time go in, the new state
// and the transition it caused (if any) come out. No clock, no I/O, no randomness inside.
//
// Semantics (HAProxy's rise/fall, keepalived's retry):
// - A target is "unknown" until its first result, which decides at once: success = up,
//   failure = down (HAProxy's init-state "up" and "down" both let the first check decide).
//   A restart therefore needs one probe per target, not `rise` of them, before the table
//   can be pushed complete.
// - After that, `fall` consecutive failures take an up target down and `rise` consecutive
//   successes bring a down target up. A result agreeing with the current health resets the
//   run of disagreeing ones.
// - A target is "changing" while it has seen at least one result that disagrees with its
//   health (and while unknown): it is then probed every fastIntervalMs, else every intervalMs.
//
// Flapping bound: after the first verdict every transition needs `fall` (down) or `rise`
// (up) results of its own, and transitions alternate, so n results after the first verdict
// cause at most 2 * floor(n / (rise + fall)) + 1 transitions. A target whose results simply
// alternate never changes once rise and fall are both at least 2.
import type { Health, HealthCheckSpec } from "./spec.js";

/** What one probe found. */
export interface CheckResult {
  ok: boolean;
  /** Time from the probe's start to its verdict. */
  latencyMs: number;
  /** Short and human: "connected", "status 200", "connection refused", "timeout", "exit 1". */
  reason: string;
  /** When the verdict came (ms, the checker's clock). */
  at: number;
}

export interface TargetState {
  health: Health;
  /** When `health` took its value (or when tracking began, for unknown). */
  since: number;
  /** Consecutive successes, reset by a failure. */
  successes: number;
  /** Consecutive failures, reset by a success. */
  failures: number;
  lastResult?: CheckResult;
  checks: number;
  failedChecks: number;
  /** Transitions into up and into down (the first verdict included). */
  ups: number;
  downs: number;
}

export interface Transition {
  from: Health;
  to: Health;
  /** "on first check", "after 3 failures", "after 2 successes". */
  why: string;
  at: number;
  /** The result that caused it. */
  result: CheckResult;
}

export interface Thresholds {
  rise: number;
  fall: number;
}

export interface Timing {
  intervalMs: number;
  fastIntervalMs: number;
  jitter: number;
}

export function initialState(now: number): TargetState {
  return {
    health: "unknown",
    since: now,
    successes: 0,
    failures: 0,
    checks: 0,
    failedChecks: 0,
    ups: 0,
    downs: 0,
  };
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Which health the runs of results call for, and why; undefined = no change. */
function verdict(s: TargetState, t: Thresholds): { to: Health; why: string } | undefined {
  if (s.health === "unknown") {
    return { to: s.successes > 0 ? "up" : "down", why: "on first check" };
  }
  if (s.health === "up" && s.failures >= t.fall) {
    return { to: "down", why: `after ${plural(s.failures, "failure", "failures")}` };
  }
  if (s.health === "down" && s.successes >= t.rise) {
    return { to: "up", why: `after ${plural(s.successes, "success", "successes")}` };
  }
  return undefined;
}

/** Feeds one result to a target's state. */
export function observe(
  s: TargetState,
  result: CheckResult,
  t: Thresholds,
): { state: TargetState; transition?: Transition } {
  const counted: TargetState = {
    ...s,
    successes: result.ok ? s.successes + 1 : 0,
    failures: result.ok ? 0 : s.failures + 1,
    lastResult: result,
    checks: s.checks + 1,
    failedChecks: s.failedChecks + (result.ok ? 0 : 1),
  };
  const v = verdict(counted, t);
  if (!v) return { state: counted };
  const state: TargetState = {
    ...counted,
    health: v.to,
    since: result.at,
    ups: counted.ups + (v.to === "up" ? 1 : 0),
    downs: counted.downs + (v.to === "down" ? 1 : 0),
  };
  return { state, transition: { from: s.health, to: v.to, why: v.why, at: result.at, result } };
}

/** True while a result disagreeing with the target's health has been seen (or it is unknown). */
export function isChanging(s: TargetState): boolean {
  if (s.health === "unknown") return true;
  return s.health === "up" ? s.failures > 0 : s.successes > 0;
}

/**
 * Stretches or shrinks `baseMs` by a random fraction up to `jitter`: `random` in [0, 1)
 * maps linearly onto [base * (1 - jitter), base * (1 + jitter)), so the mean stays `baseMs`.
 */
export function jittered(baseMs: number, jitter: number, random: number): number {
  return baseMs * (1 + jitter * (2 * random - 1));
}

/** The wait from the start of this probe to the start of the next one. */
export function nextWaitMs(s: TargetState, timing: Timing, random: number): number {
  const base = isChanging(s) ? timing.fastIntervalMs : timing.intervalMs;
  return jittered(base, timing.jitter, random);
}

/**
 * When a target's next probe starts: `wait` after the previous one started, but never
 * before it finished (a target never has two probes in flight).
 */
export function nextDueAt(startedAt: number, completedAt: number, waitMs: number): number {
  return Math.max(startedAt + waitMs, completedAt);
}

/**
 * Worst case from a fault to the down transition: the fault lands just after a successful
 * probe started, the next one comes after a settled (jittered) interval, then fall - 1
 * more follow at the fast interval (or back to back when a timeout outlasts it), and the
 * last one needs its whole timeout to fail. With fastIntervalMs * (1 + jitter) >= timeoutMs
 * and fastIntervalMs <= intervalMs this is at most interval * fall * (1 + jitter) + timeout.
 */
export function detectionBoundMs(spec: HealthCheckSpec): number {
  const stretch = 1 + spec.jitter;
  const between = Math.max(spec.fastIntervalMs * stretch, spec.timeoutMs);
  return spec.intervalMs * stretch + (spec.fall - 1) * between + spec.timeoutMs;
}

/**
 * Worst case from a repair to the up transition, probe latency aside: a settled interval
 * to the first success, then rise - 1 more at the fast interval; at most
 * interval * rise * (1 + jitter) when fastIntervalMs <= intervalMs.
 */
export function recoveryBoundMs(spec: HealthCheckSpec): number {
  const stretch = 1 + spec.jitter;
  return spec.intervalMs * stretch + (spec.rise - 1) * spec.fastIntervalMs * stretch;
}
