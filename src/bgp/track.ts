// Announcement state per VIP over time: since when, how many transitions. Pure: the
// time is passed in.
import type { VipState } from "./types.js";
import { formatCommunity, type NormalizedVip } from "./validate.js";

/** What the announcer settled for one VIP in one round. */
export interface VipOutcome {
  vip: NormalizedVip;
  services: string[];
  /** The decision (decide.ts). */
  wanted: boolean;
  /** Really announced: wanted, the device held, BIRD took the configuration. */
  announced: boolean;
  reason: string;
}

export interface TrackedVip {
  outcome: VipOutcome;
  sinceMs: number;
  transitions: number;
}

/** A change worth a log line and an event. */
export interface VipChange {
  prefix: string;
  /** false also when the VIP left the configuration while announced. */
  announced: boolean;
  reason: string;
}

/**
 * The next state from the previous one and this round's outcomes. A VIP seen for the
 * first time starts at `nowMs`; one that left the configuration is dropped (a change if
 * it was announced).
 */
export function trackVips(
  prev: ReadonlyMap<string, TrackedVip>,
  outcomes: readonly VipOutcome[],
  nowMs: number,
): { next: Map<string, TrackedVip>; changes: VipChange[] } {
  const next = new Map<string, TrackedVip>();
  const changes: VipChange[] = [];
  for (const o of outcomes) {
    const before = prev.get(o.vip.prefix);
    if (!before) {
      // Every VIP starts withdrawn: announcing it at once is its first transition.
      next.set(o.vip.prefix, { outcome: o, sinceMs: nowMs, transitions: o.announced ? 1 : 0 });
      if (o.announced) changes.push({ prefix: o.vip.prefix, announced: true, reason: o.reason });
      continue;
    }
    const flipped = before.outcome.announced !== o.announced;
    next.set(o.vip.prefix, {
      outcome: o,
      sinceMs: flipped ? nowMs : before.sinceMs,
      transitions: before.transitions + (flipped ? 1 : 0),
    });
    if (flipped) changes.push({ prefix: o.vip.prefix, announced: o.announced, reason: o.reason });
  }
  for (const [prefix, t] of prev) {
    if (!next.has(prefix) && t.outcome.announced) {
      changes.push({ prefix, announced: false, reason: "no longer configured" });
    }
  }
  return { next, changes };
}

/** The status view of a tracked VIP. */
export function vipState(t: TrackedVip): VipState {
  const o = t.outcome;
  const state: VipState = {
    prefix: o.vip.prefix,
    services: [...o.services],
    announced: o.announced,
    wanted: o.wanted,
    reason: o.reason,
    since: new Date(t.sinceMs).toISOString(),
    transitions: t.transitions,
    communities: o.vip.communities.map(formatCommunity),
  };
  if (o.vip.med !== undefined) state.med = o.vip.med;
  return state;
}
