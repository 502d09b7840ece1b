// What the data plane can decide for a packet, and why. Counters, trace records and
// `nflb fwmark`'s answer are all derived from these codes. Pure: no I/O.

/** The verdict given to the kernel. */
export const Verdict = {
  Drop: 0,
  /** Accept and set the packet's mark to Decision.fwmark. */
  Accept: 1,
  /** Accept with the mark the packet has (invalid packets with --invalid accept). */
  AcceptUnmarked: 2,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

export const VERDICT_NAMES: readonly string[] = ["drop", "accept", "accept-unmarked"];

/** Why: one code per path through decide(). */
export const Reason = {
  /** Accepted with the fwmark of the target the load balancer's Maglev table picked. */
  Balanced: 0,
  /** The classifier could not parse it: dropped, or accepted unmarked (--invalid accept). */
  Invalid: 1,
  /** A fragment whose addresses the tier hashes to another instance: that instance's mark. */
  TierPeer: 2,
  /** Flows are defined and none matches: dropped, or marked --nolb-fwmark. */
  NoFlow: 3,
  /** The load balancer has no active target: dropped, or marked --notargets-fwmark. */
  NoTarget: 4,
  /** A first fragment: accepted with its datagram's target (see Decision.fragOutcome). */
  FragFirst: 5,
  /** A later fragment that follows its datagram's first one. */
  FragForwarded: 6,
  /** A later fragment held until its first one comes; the original is dropped. */
  FragHeld: 7,
  /** A later fragment the fragment table dropped (Decision.fragOutcome says why). */
  FragDropped: 8,
  /** A later fragment the queue copied only in part: it cannot be held, so it is dropped. */
  FragTruncated: 9,
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** Names of the reasons (JSON, stats, logs), indexed by Reason. */
export const REASON_NAMES: readonly string[] = [
  "balanced",
  "invalid",
  "tier",
  "no-flow",
  "no-target",
  "fragment-first",
  "fragment-forwarded",
  "fragment-held",
  "fragment-dropped",
  "fragment-truncated",
];

export const REASON_COUNT = REASON_NAMES.length;
