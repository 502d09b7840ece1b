// Warm-up of one service: its health is published only once every checked target has its
// first verdict, or once the warm-up time has passed, whichever comes first. Publishing
// earlier would push a table with the still-unknown targets left out, which sends new
// flows of a just-restarted balancer to the few targets checked first (vpp-maglev and
// Meridio both hit this). Pure: time is passed in.

export type WarmupEnd = "verdicts" | "timeout";

export class Warmup {
  private readonly pending = new Set<number>();
  private endedAt: number | undefined;
  private how: WarmupEnd | undefined;

  /** Starts at `now` for `fwmarks`; with none to wait for, it is ready at once. */
  constructor(
    readonly startedAt: number,
    readonly timeoutMs: number,
    fwmarks: Iterable<number>,
  ) {
    for (const f of fwmarks) this.pending.add(f);
    if (this.pending.size === 0) this.end(startedAt, "verdicts");
  }

  get deadline(): number {
    return this.startedAt + this.timeoutMs;
  }

  get ready(): boolean {
    return this.endedAt !== undefined;
  }

  /** When and how the warm-up ended; undefined while it lasts. */
  get ended(): { at: number; how: WarmupEnd } | undefined {
    return this.endedAt === undefined || this.how === undefined
      ? undefined
      : { at: this.endedAt, how: this.how };
  }

  /** Targets still without a verdict. */
  waitingFor(): number[] {
    return [...this.pending].sort((a, b) => a - b);
  }

  private end(now: number, how: WarmupEnd): true {
    this.endedAt = now;
    this.how = how;
    return true;
  }

  /** A target to wait for as well (added or reset before the warm-up ended). */
  add(fwmark: number): void {
    if (!this.ready) this.pending.add(fwmark);
  }

  /** A target no longer waited for (removed); true if that ended the warm-up. */
  remove(fwmark: number, now: number): boolean {
    if (this.ready || !this.pending.delete(fwmark)) return false;
    return this.pending.size === 0 && this.end(now, "verdicts");
  }

  /** A target had its first verdict; true if that ended the warm-up. */
  verdict(fwmark: number, now: number): boolean {
    return this.remove(fwmark, now);
  }

  /** True if the warm-up time ran out at `now` (and ends the warm-up). */
  expire(now: number): boolean {
    if (this.ready || now < this.deadline) return false;
    return this.end(this.deadline, "timeout");
  }
}
