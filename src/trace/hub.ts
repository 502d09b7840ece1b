// The daemon main thread's side of tracing: the shared trace mask the workers load once
// per batch, one ring per worker, and the attached tracers. While at least one tracer is
// attached it drains the rings every DRAIN_MS and hands each record to the tracers that
// selected its kind; a tracer whose socket does not keep up (more than `limitBytes`
// waiting in it) loses lines, counted, and is told how many once it catches up. Nothing
// here ever waits for a tracer or a worker.

import { formatRecordJson } from "./format.js";
import { ALL_TRACE_BITS, Kind, PER_PACKET_BITS, selectionOf, type TraceKind } from "./kinds.js";
import { droppedJson, logJson } from "./record.js";
import { FLAG_TRUNCATED, type RingStats, TraceRing } from "./ring.js";

/** Where a tracer's lines go: a net.Socket, or a stand-in in tests. */
export interface TraceSink {
  write(data: string): unknown;
  readonly writableLength: number;
}

export const DEFAULT_DRAIN_MS = 10;
/** Bytes waiting in a tracer's socket above which its lines are dropped. */
export const DEFAULT_TRACER_LIMIT = 1 << 20;

export interface TracerStatus {
  id: number;
  selection: TraceKind[];
  json: boolean;
  /** Lines queued for the socket. */
  lines: number;
  /** Lines dropped because the socket did not keep up. */
  dropped: number;
  /** Bytes waiting in the socket now. */
  buffered: number;
}

export interface HubStatus {
  mask: number;
  selection: TraceKind[];
  tracers: TracerStatus[];
  rings: (RingStats & { queue: number })[];
}

export class Tracer {
  lines = 0;
  dropped = 0;
  /** Dropped since the last notice. */
  private unreported = 0;
  /** Over the limit at the start of this drain: records for it are counted, not decoded. */
  blocked = false;
  private out: string[] = [];
  private outBytes = 0;

  constructor(
    readonly id: number,
    readonly mask: number,
    readonly json: boolean,
    readonly sink: TraceSink,
    private readonly limit: number,
  ) {}

  full(): boolean {
    return this.sink.writableLength + this.outBytes > this.limit;
  }

  /** Counts a line that was not delivered. */
  drop(): void {
    this.dropped++;
    this.unreported++;
  }

  push(line: string): void {
    if (this.full()) {
      this.drop();
      return;
    }
    this.notice();
    this.out.push(line, "\n");
    this.outBytes += line.length + 1;
    this.lines++;
  }

  /** Tells the tracer how many lines it lost, once there is room again. */
  private notice(): void {
    if (this.unreported === 0) return;
    const json = droppedJson(Date.now(), this.unreported, "tracer");
    this.unreported = 0;
    const line = this.json ? json : formatRecordJson(json);
    this.out.push(line, "\n");
    this.outBytes += line.length + 1;
  }

  flush(): void {
    if (this.unreported > 0 && !this.full()) this.notice();
    if (this.out.length === 0) return;
    const data = this.out.join("");
    this.out = [];
    this.outBytes = 0;
    this.sink.write(data);
  }

  status(): TracerStatus {
    return {
      id: this.id,
      selection: selectionOf(this.mask),
      json: this.json,
      lines: this.lines,
      dropped: this.dropped,
      buffered: this.sink.writableLength + this.outBytes,
    };
  }
}

interface RingEntry {
  queue: number;
  ring: TraceRing;
  droppedSeen: number;
}

export interface HubOptions {
  drainMs?: number;
  tracerLimitBytes?: number;
  ringSlots?: number;
  ringSlotBytes?: number;
}

export class TraceHub {
  /** One Int32 word: the union of the attached tracers' selections. */
  readonly maskBuffer = new SharedArrayBuffer(4);
  private readonly maskWord = new Int32Array(this.maskBuffer);
  private readonly rings: RingEntry[] = [];
  private tracers: Tracer[] = [];
  private timer: NodeJS.Timeout | undefined;
  private nextId = 1;
  private readonly drainMs: number;
  private readonly limit: number;
  private readonly ringSlots: number | undefined;
  private readonly ringSlotBytes: number | undefined;

  constructor(options: HubOptions = {}) {
    this.drainMs = options.drainMs ?? DEFAULT_DRAIN_MS;
    this.limit = options.tracerLimitBytes ?? DEFAULT_TRACER_LIMIT;
    this.ringSlots = options.ringSlots;
    this.ringSlotBytes = options.ringSlotBytes;
  }

  /** A new ring for the worker of `queue`: pass the buffer to it in workerData. */
  addRing(queue: number): SharedArrayBuffer {
    const buffer = TraceRing.allocate(this.ringSlots, this.ringSlotBytes);
    const ring = new TraceRing(buffer);
    this.rings.push({ queue, ring, droppedSeen: ring.dropped() });
    return buffer;
  }

  /** Forgets the ring of `queue` (its worker is gone); what it still holds is delivered. */
  removeRing(queue: number): void {
    const i = this.rings.findIndex((r) => r.queue === queue);
    if (i < 0) return;
    if (this.tracers.length > 0) this.drain();
    this.rings.splice(i, 1);
  }

  get mask(): number {
    return Atomics.load(this.maskWord, 0);
  }

  get tracerCount(): number {
    return this.tracers.length;
  }

  attach(sink: TraceSink, mask: number, json: boolean): Tracer {
    if ((mask & ~ALL_TRACE_BITS) !== 0 || mask === 0)
      throw new RangeError(`bad trace mask ${mask}`);
    if (this.tracers.length === 0) {
      // Records left from an earlier session are stale; ring drops before now are not news.
      for (const r of this.rings) {
        r.ring.skipAll();
        r.droppedSeen = r.ring.dropped();
      }
      this.timer = setInterval(() => this.tick(), this.drainMs);
      this.timer.unref();
    }
    const tracer = new Tracer(this.nextId++, mask, json, sink, this.limit);
    this.tracers = [...this.tracers, tracer];
    this.publishMask();
    return tracer;
  }

  detach(tracer: Tracer): void {
    if (!this.tracers.includes(tracer)) return;
    this.tracers = this.tracers.filter((t) => t !== tracer);
    this.publishMask();
    if (this.tracers.length === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private publishMask(): void {
    let mask = 0;
    for (const t of this.tracers) mask |= t.mask;
    Atomics.store(this.maskWord, 0, mask);
  }

  /** A log line of the daemon (any level: the log trace is not filtered by the log level). */
  log(level: string, message: string): void {
    if ((this.mask & (1 << Kind.log)) === 0) return;
    this.deliver(Kind.log, logJson(Date.now(), level, message));
  }

  /** A record from the main thread or a worker's message (flow-conf, target). */
  event(kind: number, json: string): void {
    if ((this.mask & (1 << kind)) === 0) return;
    this.deliver(kind, json);
  }

  private deliver(kind: number, json: string): void {
    const bit = 1 << kind;
    let text: string | undefined;
    for (const t of this.tracers) {
      if ((t.mask & bit) === 0 || t.blocked) continue;
      if (t.json) t.push(json);
      else {
        text ??= formatRecordJson(json);
        t.push(text);
      }
    }
  }

  /** Drains every ring into the tracers and writes to their sockets. */
  tick(): void {
    this.drain();
    this.flush();
  }

  drain(): void {
    const tracers = this.tracers;
    if (tracers.length === 0) return;
    for (const t of tracers) t.blocked = t.full();
    const wants = (kind: number): boolean => {
      const bit = 1 << kind;
      let decode = false;
      for (const t of tracers) {
        if ((t.mask & bit) === 0) continue;
        if (t.blocked) t.drop();
        else decode = true;
      }
      return decode;
    };
    const visit = (kind: number, text: string, flags: number): void => {
      // A record cut to fit its slot is no longer valid JSON: say what it was.
      const json =
        (flags & FLAG_TRUNCATED) === 0
          ? text
          : JSON.stringify({ ts: Date.now(), kind: selectionOf(1 << kind)[0], truncated: text });
      this.deliver(kind, json);
    };
    const now = Date.now();
    for (const r of this.rings) {
      r.ring.drain(wants, visit);
      const dropped = r.ring.dropped();
      if (dropped !== r.droppedSeen) {
        const count = (dropped - r.droppedSeen) >>> 0;
        r.droppedSeen = dropped;
        const json = droppedJson(now, count, "ring", r.queue);
        let text: string | undefined;
        for (const t of tracers) {
          if ((t.mask & PER_PACKET_BITS) === 0) continue;
          if (t.json) t.push(json);
          else {
            text ??= formatRecordJson(json);
            t.push(text);
          }
        }
      }
    }
    for (const t of tracers) t.blocked = false;
  }

  flush(): void {
    for (const t of this.tracers) t.flush();
  }

  status(): HubStatus {
    const mask = this.mask;
    return {
      mask,
      selection: selectionOf(mask),
      tracers: this.tracers.map((t) => t.status()),
      rings: this.rings.map((r) => ({ queue: r.queue, ...r.ring.stats() })),
    };
  }

  /** Delivers what is left and stops; the tracers' sockets are the server's to close. */
  close(): void {
    this.tick();
    this.tracers = [];
    this.publishMask();
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}
