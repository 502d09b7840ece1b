// A Decision in words: the reason strings of packet and frag trace records, and the
// answer of `nflb fwmark`. Pure: no I/O. The trace strings are built once here, so
// tracing a packet looks them up instead of concatenating.
import { FRAG_OUTCOME_NAMES } from "../fragments/table.js";
import { formatInfo, type PacketInfo } from "../packet/info.js";
import {
  FRAG_EVENT_OF_OUTCOME,
  FRAG_REASON_OF_OUTCOME,
  FRAG_TRUNCATED_REASON,
  type FragEvent,
} from "../trace/record.js";
import { type Decision, type FlowRouting, NO_FRAG_OUTCOME } from "./decide.js";
import { REASON_NAMES, Reason, VERDICT_NAMES, Verdict } from "./reason.js";
import { NO_SLOT } from "./table.js";

/** "fragment <event>[: <why>]" per fragment-table outcome, as packet traces say it. */
const FRAGMENT_TRACE_REASONS: readonly string[] = FRAG_EVENT_OF_OUTCOME.map((event, o) => {
  const why = FRAG_REASON_OF_OUTCOME[o];
  return `fragment ${event}${why === null ? "" : `: ${why}`}`;
});
const TRUNCATED_TRACE_REASON = `fragment dropped: ${FRAG_TRUNCATED_REASON}`;

/** The reason a packet trace record gives (null for a plain balanced accept). */
export function traceReason(d: Decision): string | null {
  switch (d.reason) {
    case Reason.Balanced:
      return null;
    case Reason.Invalid:
      return "invalid";
    case Reason.TierPeer:
      return "tier";
    case Reason.NoFlow:
      return "no-flow";
    case Reason.NoTarget:
      return "no-target";
    case Reason.FragTruncated:
      return TRUNCATED_TRACE_REASON;
    default:
      return d.fragOutcome === NO_FRAG_OUTCOME ? null : FRAGMENT_TRACE_REASONS[d.fragOutcome];
  }
}

/** The frag trace record's event and reason for a fragment's decision. */
export function fragTraceEvent(d: Decision): { event: FragEvent; reason: string | null } {
  if (d.reason === Reason.TierPeer) return { event: "tier", reason: null };
  if (d.reason === Reason.FragTruncated) return { event: "dropped", reason: FRAG_TRUNCATED_REASON };
  const o = d.fragOutcome;
  if (o === NO_FRAG_OUTCOME) return { event: "forward", reason: null };
  return { event: FRAG_EVENT_OF_OUTCOME[o], reason: FRAG_REASON_OF_OUTCOME[o] };
}

/** A decision as `nflb fwmark --json` prints it. */
export interface DecisionReport {
  /** The mark the packet gets, null when it is dropped (or accepted unmarked). */
  fwmark: number | null;
  verdict: string;
  reason: string;
  /** The matched flow's name; null when no flows are defined or none matched. */
  flow: string | null;
  /** The load balancer whose table decided; null when none did. */
  lb: string | null;
  /** What the hash covered: "5-tuple", "addresses", "ports"; null when nothing was hashed. */
  hashMode: string | null;
  hash: number | null;
  /** The target slot in that load balancer, null when none. */
  slot: number | null;
  /** The fwmark the hash picked, null when none. */
  target: number | null;
  /** What the fragment table did, when it was asked. */
  fragment: string | null;
  /** The packet as classified ("tcp 10.0.0.1:1234 -> 10.0.0.2:80 (hash 5-tuple)"). */
  packet: string;
}

const MODE_NAMES = ["5-tuple", "addresses", "ports"];

/** The whole decision, for people and programs (not for the packet path). */
export function describeDecision(
  d: Decision,
  info: PacketInfo,
  flows: FlowRouting | undefined,
): DecisionReport {
  const hashed = d.lb !== null && d.reason !== Reason.TierPeer;
  let hashMode: string | null = null;
  if (hashed) hashMode = d.byAddresses ? "addresses" : MODE_NAMES[info.hashMode];
  return {
    fwmark: d.verdict === Verdict.Accept ? d.fwmark : null,
    verdict: VERDICT_NAMES[d.verdict],
    reason: REASON_NAMES[d.reason],
    flow: d.flow >= 0 && flows !== undefined ? flows.matcher.flows[d.flow].name : null,
    lb: d.lb !== null ? d.lbName : null,
    hashMode,
    hash: hashed ? d.hash : null,
    slot: d.slot === NO_SLOT ? null : d.slot,
    target: d.target === 0 ? null : d.target,
    fragment: d.fragOutcome === NO_FRAG_OUTCOME ? null : FRAG_OUTCOME_NAMES[d.fragOutcome],
    packet: formatInfo(info),
  };
}

/** One line: "3: flow web -> load balancer web, 5-tuple hash, slot 2". */
export function explainDecision(r: DecisionReport): string {
  const mark = r.fwmark !== null ? `${r.fwmark}` : `none (${r.verdict})`;
  const parts: string[] = [];
  if (r.flow !== null) parts.push(`flow ${r.flow}`);
  if (r.lb !== null) parts.push(`load balancer ${r.lb}`);
  if (r.hashMode !== null) parts.push(`${r.hashMode} hash 0x${(r.hash ?? 0).toString(16)}`);
  if (r.slot !== null) parts.push(`slot ${r.slot}`);
  if (r.fragment !== null) parts.push(`fragment ${r.fragment}`);
  const why = WHY[r.reason] ?? r.reason;
  return `${mark}: ${why}${parts.length > 0 ? ` (${parts.join(", ")})` : ""}; ${r.packet}`;
}

const WHY: Record<string, string> = {
  balanced: "balanced",
  invalid: "invalid packet",
  tier: "fragment handed to the tier instance that owns its addresses",
  "no-flow": "no flow matches",
  "no-target": "no active target",
  "fragment-first": "first fragment: the datagram's target",
  "fragment-forwarded": "later fragment: follows its first fragment",
  "fragment-held": "later fragment: held until its first fragment comes",
  "fragment-dropped": "later fragment: dropped",
  "fragment-truncated": "later fragment: dropped, not copied whole",
};
