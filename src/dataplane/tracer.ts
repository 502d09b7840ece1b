// A worker's per-packet tracing: which packets a tracer selected (trace flows, SCTP,
// fragments) and their records, written into the worker's ring. When nobody traces, the
// cost is one atomic load of the mask per batch and one test of `perPacket` per packet;
// records are built only for what a tracer selected.
import {
  type Decision,
  type FlowRouting,
  fragTraceEvent,
  Reason,
  traceReason,
} from "../decide/index.js";
import type { FlowMatcher } from "../flows/matcher.js";
import { FragKind, IpProto, type PacketInfo } from "../packet/info.js";
import { Kind, PER_PACKET_BITS, TraceBit } from "../trace/kinds.js";
import { fragJson, type PacketDecision, packetJson, reinjectedJson } from "../trace/record.js";
import { TraceRing } from "../trace/ring.js";

export class PacketTracer {
  /** The mask as loaded at the start of the current batch. */
  bits = 0;
  /** Some per-packet record may be due in this batch. */
  perPacket = false;
  private readonly mask: Int32Array;
  private readonly ring: TraceRing | undefined;
  private traceFlows: FlowMatcher | undefined;
  private sctp = false;
  private frag = false;
  private readonly record: PacketDecision = {
    traceFlow: null,
    flow: null,
    lb: null,
    target: -1,
    fwmark: -1,
    reason: null,
  };

  constructor(
    private readonly queue: number,
    trace: { mask: SharedArrayBuffer; ring: SharedArrayBuffer } | undefined,
  ) {
    this.mask = new Int32Array(trace?.mask ?? new SharedArrayBuffer(4));
    this.ring = trace ? new TraceRing(trace.ring) : undefined;
  }

  /** Loads the tracers' selection (once per batch, and by housekeeping). */
  loadMask(): number {
    this.bits = Atomics.load(this.mask, 0);
    return this.bits;
  }

  /**
   * At the start of a batch: what to trace per packet. `traceFlows` are the compiled
   * trace flows (when the packet trace is on); `fragments` is set on the fragment queue.
   */
  beginBatch(traceFlows: FlowMatcher | undefined, fragments: boolean): void {
    const bits = this.bits;
    this.perPacket = false;
    if ((bits & PER_PACKET_BITS) === 0 || this.ring === undefined) return;
    this.traceFlows = (bits & TraceBit.packet) !== 0 ? traceFlows : undefined;
    this.sctp = (bits & TraceBit.sctp) !== 0;
    this.frag = (bits & TraceBit.frag) !== 0 && fragments;
    this.perPacket = this.traceFlows !== undefined || this.sctp || this.frag;
  }

  /** The packet and sctp records of a decided (valid) packet, and its frag record. */
  packet(
    info: PacketInfo,
    buf: Uint8Array,
    d: Decision,
    flows: FlowRouting | undefined,
    now: number,
  ): void {
    const ring = this.ring as TraceRing;
    const traced = this.traceFlows !== undefined ? this.traceFlows.match(info, buf) : -1;
    const sctp = this.sctp && info.proto === IpProto.SCTP;
    if (traced >= 0 || sctp) {
      const r = this.record;
      r.flow = d.flow >= 0 && flows !== undefined ? flows.matcher.flows[d.flow].name : null;
      r.lb = d.lb !== null ? d.lbName : null;
      r.target = d.target === 0 ? -1 : d.target;
      r.fwmark = d.fwmark === 0 ? -1 : d.fwmark;
      r.reason = traceReason(d);
      if (traced >= 0) {
        r.traceFlow = (this.traceFlows as FlowMatcher).flows[traced].name;
        ring.write(Kind.packet, packetJson("packet", now, this.queue, info, r));
      }
      if (sctp) {
        r.traceFlow = null;
        ring.write(Kind.sctp, packetJson("sctp", now, this.queue, info, r));
      }
    }
    if (this.frag && info.fragKind !== FragKind.None && isFragmentPath(d.reason)) {
      const e = fragTraceEvent(d);
      const mark = d.fwmark === 0 ? -1 : d.fwmark;
      ring.write(Kind.frag, fragJson(now, this.queue, info, e.event, mark, e.reason));
    }
  }

  /** Held fragments written back through the TUN device (frag trace). */
  reinjected(count: number, now: number): void {
    if (count > 0 && this.frag && this.ring !== undefined) {
      this.ring.write(Kind.frag, reinjectedJson(now, this.queue, count));
    }
  }
}

/** Fragment decisions the frag trace reports: tier hand-overs and the fragment table's. */
function isFragmentPath(reason: Reason): boolean {
  return reason === Reason.TierPeer || reason >= Reason.FragFirst;
}
