// Which probe is due when: a binary min-heap of due times with lazy deletion, so a
// thousand targets cost O(log n) per probe rather than a scan. Pure: `next(now)` takes
// the time. Ties go in the order they were scheduled, so runs are reproducible.

interface Entry<K> {
  dueAt: number;
  seq: number;
  key: K;
}

export class Schedule<K> {
  private heap: Entry<K>[] = [];
  /** The live entry of each key; heap entries not in here are stale and skipped. */
  private live = new Map<K, Entry<K>>();
  private seq = 0;

  get size(): number {
    return this.live.size;
  }

  has(key: K): boolean {
    return this.live.has(key);
  }

  dueAt(key: K): number | undefined {
    return this.live.get(key)?.dueAt;
  }

  /** Schedules `key` at `dueAt`, replacing any earlier schedule of it. */
  set(key: K, dueAt: number): void {
    const entry = { dueAt, seq: this.seq++, key };
    this.live.set(key, entry);
    this.push(entry);
    // Stale entries pile up when keys are rescheduled often: rebuild when half is dead.
    if (this.heap.length > 64 && this.heap.length > 2 * this.live.size) this.rebuild();
  }

  delete(key: K): void {
    this.live.delete(key);
  }

  /** Takes every key due at or before `now`, earliest first, and says when the next is due. */
  next(now: number): { due: K[]; wakeAt: number | undefined } {
    const due: K[] = [];
    for (;;) {
      const top = this.peek();
      if (!top || top.dueAt > now) return { due, wakeAt: top?.dueAt };
      this.pop();
      this.live.delete(top.key);
      due.push(top.key);
    }
  }

  /** The earliest live entry (stale ones are dropped on the way). */
  private peek(): Entry<K> | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0];
      if (this.live.get(top.key) === top) return top;
      this.pop();
    }
    return undefined;
  }

  private before(a: Entry<K>, b: Entry<K>): boolean {
    return a.dueAt < b.dueAt || (a.dueAt === b.dueAt && a.seq < b.seq);
  }

  private push(entry: Entry<K>): void {
    const h = this.heap;
    h.push(entry);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (h.length === 0 || last === undefined) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.before(h[l], h[m])) m = l;
      if (r < h.length && this.before(h[r], h[m])) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }

  private rebuild(): void {
    const entries = [...this.live.values()];
    this.heap = [];
    for (const e of entries) this.push(e);
  }
}
