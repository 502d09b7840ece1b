// The data plane's decision for one classified packet: tier placement of fragments, the
// flow (which load balancer), the hash and Maglev slot, the fragment path, and what to do
// when nothing fits (no flow, no target, invalid). The daemon's workers, `nflb fwmark`
// and the tests all call decide(), so they cannot disagree.
//
// Pure: no I/O, no clock (`now` comes with each call, for the fragment table). Hot path:
// decide() writes into the caller's Decision, allocates nothing and never throws.
import type { FlowMatcher } from "../flows/matcher.js";
import { type FragmentTable, FragOutcome } from "../fragments/table.js";
import { addressHash, FragKind, flowHash, type PacketInfo } from "../packet/info.js";
import { Reason, Verdict } from "./reason.js";
import { type LbTable, NO_SLOT } from "./table.js";

/** Decision.fragOutcome when the fragment table was not asked. */
export const NO_FRAG_OUTCOME = -1;

/** The answer of decide(); allocate one and reuse it for every packet. */
export class Decision {
  verdict: Verdict = Verdict.Drop;
  /** The mark set with an Accept verdict; 0 otherwise. */
  fwmark = 0;
  reason: Reason = Reason.Balanced;
  /** The classifier's InvalidReason (meaningful with Reason.Invalid only). */
  invalid = 0;
  /** Index of the matched flow in Decider.flows, -1 when none (or no flows are defined). */
  flow = -1;
  /** The load balancer whose table was used (null when none was: invalid, tier, no flow). */
  lb: LbTable | null = null;
  lbName = "";
  /** The load balancer hashed the addresses only (a flow without protocols). */
  byAddresses = false;
  /** The hash looked up in the table (0 when none was computed). */
  hash = 0;
  /**
   * The target slot of the final fwmark in `lb`, NO_SLOT when there is none (or a
   * fragment follows a target of another table): what per-target counters count.
   */
  slot = NO_SLOT;
  /** The fwmark the hash picked (a later fragment's is its first one's: 0 here). */
  target = 0;
  /** What the fragment table did (FragOutcome), NO_FRAG_OUTCOME when it was not asked. */
  fragOutcome: number = NO_FRAG_OUTCOME;
}

/** Compiled flows and, per flow index, the load balancer serving it. */
export interface FlowRouting {
  readonly matcher: FlowMatcher;
  /** Per flow index: its load balancer's table and name. */
  readonly lbs: readonly LbTable[];
  readonly lbNames: readonly string[];
}

export interface DecideOptions {
  /** Mark for packets when the load balancer has no active target; 0 = drop them. */
  notargetsFwmark: number;
  /** Mark for packets no flow matches (when flows are defined); 0 = drop them. */
  nolbFwmark: number;
  /** Accept invalid packets unmarked instead of dropping them. */
  acceptInvalid: boolean;
}

export const DEFAULT_DECIDE_OPTIONS: Readonly<DecideOptions> = Object.freeze({
  notargetsFwmark: 0,
  nolbFwmark: 0,
  acceptInvalid: false,
});

/**
 * What a data plane instance decides with: its own load balancer, and optionally flows,
 * a tier and a fragment table. The owner swaps the fields between packets (a table that
 * changed, new flows); decide() reads them once per packet.
 */
export class Decider {
  /** Flows (which load balancer serves what); undefined = every packet is the own LB's. */
  flows: FlowRouting | undefined;
  /** The load-balancer tier (instances by own fwmark) that fragments are placed in. */
  tier: LbTable | undefined;
  /** This instance's own fwmark in the tier. */
  ownFwmark = 0;
  /** The fragment table (the fragment queue's worker); undefined = fragments are hashed. */
  fragments: FragmentTable | undefined;

  constructor(
    /** The instance's own load balancer (used when no flows are defined). */
    public own: LbTable,
    public ownName: string,
    readonly options: Readonly<DecideOptions> = DEFAULT_DECIDE_OPTIONS,
  ) {}

  /**
   * Decides for the packet `info` (classify()'s result for buf[off, off+len), whose
   * original length is origLen: a later fragment is held only when copied whole) at
   * time `now` (ms; only the fragment table reads it). Writes `out`.
   */
  decide(
    info: PacketInfo,
    buf: Uint8Array,
    off: number,
    len: number,
    origLen: number,
    now: number,
    out: Decision,
  ): void {
    if (info.invalid !== 0) {
      this.invalid(info, out);
      return;
    }
    const frag = info.fragKind;
    out.fragOutcome = NO_FRAG_OUTCOME;
    if (frag !== FragKind.None && this.tier !== undefined && this.placeInTier(info, out)) return;
    // Which load balancer: the best flow's, or the own one when no flows are defined.
    let lb: LbTable = this.own;
    if (this.flows === undefined) {
      out.flow = -1;
      out.lb = lb;
      out.lbName = this.ownName;
      out.byAddresses = false;
    } else {
      const routed = this.route(info, buf, out);
      if (routed === null) return;
      lb = routed;
    }
    const hash = out.byAddresses ? addressHash(info, lb.hashSeed) : flowHash(info, lb.hashSeed);
    out.hash = hash;
    const slot = lb.slotFor(hash);
    out.slot = slot;
    if (slot === NO_SLOT) {
      out.target = 0;
      out.reason = Reason.NoTarget;
      this.markOrDrop(out, this.options.notargetsFwmark);
      return;
    }
    const mark = lb.fwmarkBySlot[slot];
    out.target = mark;
    if (frag === FragKind.None || this.fragments === undefined) {
      out.reason = Reason.Balanced;
      out.fwmark = mark;
      out.verdict = Verdict.Accept;
      return;
    }
    this.fragment(info, buf, off, len, origLen, now, out);
  }

  /** The flow's load balancer (filled into `out`), or null when no flow matches (decided). */
  private route(info: PacketInfo, buf: Uint8Array, out: Decision): LbTable | null {
    const flows = this.flows as FlowRouting;
    const f = flows.matcher.match(info, buf);
    if (f < 0) {
      this.unmatched(out, Reason.NoFlow, this.options.nolbFwmark, null, "", 0);
      return null;
    }
    const lb = flows.lbs[f];
    out.flow = f;
    out.lb = lb;
    out.lbName = flows.lbNames[f];
    out.byAddresses = flows.matcher.hashOnAddresses[f] === 1;
    return lb;
  }

  /** The fragment table's part: a first fragment is recorded, a later one follows it. */
  private fragment(
    info: PacketInfo,
    buf: Uint8Array,
    off: number,
    len: number,
    origLen: number,
    now: number,
    out: Decision,
  ): void {
    const table = this.fragments as FragmentTable;
    if (info.fragKind === FragKind.First) {
      out.fragOutcome = table.first(info, out.target, now);
      // A duplicate first fragment keeps the target its datagram already has.
      follow(out, Reason.FragFirst, table.target >>> 0);
      return;
    }
    // A later fragment has no ports: it goes where its first fragment went.
    out.target = 0;
    if (len < origLen) {
      drop(out, Reason.FragTruncated);
      return;
    }
    const o = table.later(info, buf, off, len, now);
    out.fragOutcome = o;
    if (o === FragOutcome.Forwarded) follow(out, Reason.FragForwarded, table.target >>> 0);
    else drop(out, o === FragOutcome.Held ? Reason.FragHeld : Reason.FragDropped);
  }

  /** Not classified: dropped, or accepted unmarked; nothing else was looked at. */
  private invalid(info: PacketInfo, out: Decision): void {
    this.unmatched(out, Reason.Invalid, 0, null, "", 0);
    out.invalid = info.invalid;
    out.fragOutcome = NO_FRAG_OUTCOME;
    out.verdict = this.options.acceptInvalid ? Verdict.AcceptUnmarked : Verdict.Drop;
  }

  /** A fragment owned by another tier instance gets its mark; true when so decided. */
  private placeInTier(info: PacketInfo, out: Decision): boolean {
    const tier = this.tier as LbTable;
    const owner = tier.slotFor(addressHash(info, tier.hashSeed));
    if (owner === NO_SLOT) return false;
    const peer = tier.fwmarkBySlot[owner];
    if (peer === this.ownFwmark) return false;
    this.unmatched(out, Reason.TierPeer, peer, null, "", 0);
    return true;
  }

  /** A decision without a target of a load balancer: what it says of the table is empty. */
  private unmatched(
    out: Decision,
    reason: Reason,
    mark: number,
    lb: LbTable | null,
    lbName: string,
    hash: number,
  ): void {
    out.flow = -1;
    out.lb = lb;
    out.lbName = lbName;
    out.byAddresses = false;
    out.hash = hash;
    out.slot = NO_SLOT;
    out.target = 0;
    out.reason = reason;
    this.markOrDrop(out, mark);
  }

  /** The configured mark, or a drop when it is 0. */
  private markOrDrop(out: Decision, mark: number): void {
    out.fwmark = mark;
    out.verdict = mark !== 0 ? Verdict.Accept : Verdict.Drop;
  }
}

function accept(out: Decision, reason: Reason, mark: number): void {
  out.reason = reason;
  out.fwmark = mark;
  out.verdict = Verdict.Accept;
}

function drop(out: Decision, reason: Reason): void {
  out.reason = reason;
  out.fwmark = 0;
  out.verdict = Verdict.Drop;
}

/** A fragment sent to its datagram's target; its slot counts only if the hash chose it. */
function follow(out: Decision, reason: Reason, mark: number): void {
  if (out.lb === null || out.slot === NO_SLOT || out.lb.fwmarkBySlot[out.slot] !== mark) {
    out.slot = NO_SLOT;
  }
  accept(out, reason, mark);
}
