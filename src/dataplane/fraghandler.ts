// Fragments in the daemon, the I/O part: the fragment table (which decide() consults)
// holds copies of later fragments that overtook their first one; once the first arrives
// they are ready, and this handler writes them back into the stack through a TUN device,
// where they pass the queue again and find their target. It also publishes the table's
// counters.
import { FragmentTable, type FragTableConfig } from "../fragments/table.js";
import { loadAddon, type NativeAddon } from "../native/addon.js";
import { C } from "./counters.js";

export interface FragmentOptions {
  /** Persistent TUN device for re-injection (created by `nflb setup --fragments`). */
  tun: string;
  table: FragTableConfig;
}

export class FragmentHandler {
  readonly table: FragmentTable;
  private readonly addon: NativeAddon;
  private readonly tunFd: number;

  constructor(
    options: FragmentOptions,
    private readonly counters: Float64Array,
  ) {
    this.table = new FragmentTable(options.table);
    this.addon = loadAddon();
    this.tunFd = this.addon.tunOpen(options.tun).fd;
  }

  /**
   * After each batch: re-inject what became ready, expire old entries, publish counters.
   * Returns how many fragments were re-injected.
   */
  afterBatch(now: number): number {
    let reinjected = 0;
    if (this.table.ready > 0) {
      reinjected = this.table.drainReady((bytes, off, len) => {
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
    return reinjected;
  }

  close(): void {
    this.addon.fdClose(this.tunFd);
  }
}
