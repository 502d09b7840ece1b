// The checker's snapshot in the words of the service's status contract
// (src/service/status.ts), so `nflb status`, metrics and the dashboard read one shape.
import type { CheckResultStatus, ServiceEvent, TargetStatus } from "../service/status.js";
import type { TargetSnapshot, TargetTransition } from "./engine.js";
import { transitionLine } from "./format.js";

export type TargetHealthStatus = Pick<
  TargetStatus,
  "health" | "healthSince" | "lastCheck" | "transitions"
>;

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The health part of a target's status. */
export function targetHealthStatus(t: TargetSnapshot): TargetHealthStatus {
  const r = t.lastResult;
  const lastCheck: CheckResultStatus | undefined = r
    ? { ok: r.ok, latencyMs: r.latencyMs, reason: r.reason, at: iso(r.at) }
    : undefined;
  return {
    health: t.health,
    healthSince: iso(t.since),
    lastCheck,
    // Every transition, the first verdict included: the same count the log and the hooks see.
    transitions: t.ups + t.downs,
  };
}

/** A transition as an entry of the service's recent events. */
export function transitionEvent(e: TargetTransition): ServiceEvent {
  return { at: iso(e.at), kind: "health", service: e.target.service, message: transitionLine(e) };
}
