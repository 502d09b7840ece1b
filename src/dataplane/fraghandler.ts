// Fragments in the daemon: the first fragment of a datagram picks the target (it has the
// ports), the fragment table remembers it, later fragments follow it. Later fragments
// that overtake the first are copied and held; once the first arrives they are written
// back into the stack through a TUN device, pass the queue again and find their target.
import {
  FragmentTable,
  FragOutcome,
  type FragTableConfig,
  FragVerdict,
  fragVerdict,
} from "../fragments/table.js";
import { loadAddon, type NativeAddon } from "../native/addon.js";
import { FragKind, type PacketInfo } from "../packet/index.js";
import { C } from "./counters.js";

/** markFor's outcome when the queue copied less than the whole fragment. */
export const TRUNCATED = -1;

export interface FragmentOptions {
  /** Persistent TUN device for re-injection (created by `nflb setup --fragments`). */
  tun: string;
  table: FragTableConfig;
}

export class FragmentHandler {
  readonly table: FragmentTable;
  private readonly addon: NativeAddon;
  private readonly tunFd: number;
  /** What the table did with the last fragment, or TRUNCATED (the copy was not whole). */
  outcome: number = FragOutcome.Forwarded;

  constructor(
    options: FragmentOptions,
    private readonly counters: Float64Array,
  ) {
    this.table = new FragmentTable(options.table);
    this.addon = loadAddon();
    this.tunFd = this.addon.tunOpen(options.tun).fd;
  }

  /**
   * The fwmark for a fragment, or 0 when the packet is to be dropped (a copy is held
   * until its first fragment comes, or the table dropped and counted it). `firstMark` is
   * the target its flow hash chose, which a first fragment takes. The table stores
   * fwmarks (as int32), so fragments of flows of any load balancer find their target.
   */
  markFor(
    info: PacketInfo,
    buf: Uint8Array,
    off: number,
    len: number,
    origLen: number,
    firstMark: number,
    now: number,
  ): number {
    if (info.fragKind === FragKind.First) {
      this.outcome = this.table.first(info, firstMark | 0, now);
      // A duplicate first fragment keeps the target its datagram already has.
      return this.table.target >>> 0;
    }
    // A held copy must be the whole fragment; the fragment queue copies whole packets.
    if (len < origLen) {
      this.counters[C.fragTruncated]++;
      this.outcome = TRUNCATED;
      return 0;
    }
    const outcome = this.table.later(info, buf, off, len, now);
    this.outcome = outcome;
    return fragVerdict(outcome) === FragVerdict.Forward ? this.table.target >>> 0 : 0;
  }

  /** After each batch: re-inject what became ready, expire old entries, publish counters. */
  afterBatch(now: number): void {
    if (this.table.ready > 0) {
      this.table.drainReady((bytes, off, len) => {
        const written = this.addon.fdWrite(this.tunFd, bytes.subarray(off, off + len), len);
        if (written < 0) this.counters[C.fragReinjectErrors]++;
      });
    }
    this.table.expire(now);
    const c = this.table.counters;
    const w = this.counters;
    w[C.fragFirstSeen] = c.firstSeen;
    w[C.fragForwarded] = c.forwarded;
    w[C.fragStored] = c.stored;
    w[C.fragReinjected] = c.reinjected;
    w[C.fragExpiredEntries] = c.expiredEntries;
    w[C.fragDroppedExpired] = c.droppedExpired;
    w[C.fragDroppedPoolFull] = c.droppedPoolFull;
    w[C.fragDroppedTooBig] = c.droppedTooBig;
    w[C.fragDroppedTableFull] = c.droppedTableFull;
    w[C.fragDroppedPoisoned] = c.droppedPoisoned;
    w[C.fragPoisoned] = c.poisoned;
    w[C.fragDiscardedPoisoned] = c.discardedPoisoned;
    w[C.fragFirstDuplicate] = c.firstDuplicate;
    w[C.fragLaterSeen] = c.laterSeen;
    w[C.fragEntries] = this.table.size;
    w[C.fragHeld] = this.table.stored;
  }

  close(): void {
    this.addon.fdClose(this.tunFd);
  }
}
