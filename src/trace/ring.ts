// A trace ring: fixed-size slots in a SharedArrayBuffer, one producer (a worker, which
// writes trace records while it handles packets) and one consumer (the daemon's main
// thread, which sends them to the tracers). Neither side ever waits: a producer that finds
// the ring full drops the record and counts it in the ring's header; a consumer that finds
// it empty returns. Pure: no I/O, no clock.
//
// Layout (Int32 words, the three groups on separate 64-byte cache lines):
//   producer line: head (records written, wraps at 2^32), dropped, truncated
//   consumer line: tail (records consumed)
//   config line:   magic, slots, slotBytes
//   then `slots` slots of `slotBytes` bytes: kind (1 byte), flags (1 byte), text length
//   (2 bytes, little-endian), UTF-8 text.
// The producer fills a slot and then publishes it with Atomics.store(head); the consumer
// reads slots below head and then frees them with Atomics.store(tail). Atomics are
// sequentially consistent in JavaScript, so the slot's bytes are visible before the index
// that publishes them. head - tail (mod 2^32) is the fill level; slots is a power of 2, so
// a slot index is `counter & (slots - 1)` across the wrap.

const W_HEAD = 0;
const W_DROPPED = 1;
const W_TRUNCATED = 2;
const W_TAIL = 16;
const W_MAGIC = 32;
const W_SLOTS = 33;
const W_SLOT_BYTES = 34;
const HEADER_BYTES = 192;
const SLOT_HEADER = 4;
const RING_MAGIC = 0x4e465452; // "NFTR"

export const DEFAULT_RING_SLOTS = 1024;
export const DEFAULT_SLOT_BYTES = 512;

/** Slot flag: the text did not fit and was cut (at a character boundary). */
export const FLAG_TRUNCATED = 1;

export interface RingStats {
  slots: number;
  slotBytes: number;
  /** Records written since the ring was created (mod 2^32). */
  written: number;
  /** Records the producer dropped because the ring was full. */
  dropped: number;
  /** Records cut to fit a slot. */
  truncated: number;
  /** Records waiting for the consumer. */
  pending: number;
}

export class TraceRing {
  readonly slots: number;
  readonly slotBytes: number;
  private readonly mask: number;
  private readonly capacity: number;
  private readonly words: Int32Array;
  private readonly bytes: Buffer;

  /** Allocates a ring's shared memory: `slots` a power of 2, `slotBytes` 16..65536. */
  static allocate(slots = DEFAULT_RING_SLOTS, slotBytes = DEFAULT_SLOT_BYTES): SharedArrayBuffer {
    if (!Number.isInteger(slots) || slots < 1 || slots > 1 << 20 || (slots & (slots - 1)) !== 0) {
      throw new RangeError(`ring slots ${slots}: a power of 2 up to 2^20`);
    }
    if (!Number.isInteger(slotBytes) || slotBytes < 16 || slotBytes > 65536 || slotBytes % 4) {
      throw new RangeError(`ring slot size ${slotBytes}: a multiple of 4 in 16..65536`);
    }
    const sab = new SharedArrayBuffer(HEADER_BYTES + slots * slotBytes);
    const words = new Int32Array(sab, 0, HEADER_BYTES / 4);
    words[W_SLOTS] = slots;
    words[W_SLOT_BYTES] = slotBytes;
    Atomics.store(words, W_MAGIC, RING_MAGIC);
    return sab;
  }

  /** Attaches to a ring made by allocate() (in this thread or another). */
  constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    if (Atomics.load(this.words, W_MAGIC) !== RING_MAGIC) throw new Error("not a trace ring");
    this.slots = this.words[W_SLOTS];
    this.slotBytes = this.words[W_SLOT_BYTES];
    this.mask = this.slots - 1;
    this.capacity = Math.min(this.slotBytes - SLOT_HEADER, 0xffff);
    this.bytes = Buffer.from(buffer);
  }

  /**
   * Producer: appends a record, or drops and counts it when the ring is full. Returns
   * whether it was written. Never waits; allocates nothing but what `text` costs.
   */
  write(kind: number, text: string): boolean {
    const w = this.words;
    const head = w[W_HEAD]; // only this side writes it
    if (((head - Atomics.load(w, W_TAIL)) | 0) >= this.slots) {
      Atomics.add(w, W_DROPPED, 1);
      return false;
    }
    const off = HEADER_BYTES + (head & this.mask) * this.slotBytes;
    const b = this.bytes;
    const cap = this.capacity;
    const n = text.length === 0 ? 0 : b.write(text, off + SLOT_HEADER, cap, "utf8");
    let flags = 0;
    // Buffer.write stops at the capacity (never inside a character): cut only if longer.
    if (n >= cap - 3 && Buffer.byteLength(text, "utf8") > n) {
      flags = FLAG_TRUNCATED;
      Atomics.add(w, W_TRUNCATED, 1);
    }
    b[off] = kind;
    b[off + 1] = flags;
    b[off + 2] = n & 0xff;
    b[off + 3] = n >>> 8;
    Atomics.store(w, W_HEAD, (head + 1) | 0);
    return true;
  }

  /**
   * Consumer: visits up to `max` waiting records in order and frees their slots. Only the
   * records whose kind `wants` are decoded into text; the others are skipped unread.
   * Returns the number of records consumed (wanted or not).
   */
  drain(
    wants: (kind: number) => boolean,
    visit: (kind: number, text: string, flags: number) => void,
    max = this.slots,
  ): number {
    const w = this.words;
    const tail = w[W_TAIL]; // only this side writes it
    let n = (Atomics.load(w, W_HEAD) - tail) | 0;
    if (n > max) n = max;
    const b = this.bytes;
    for (let i = 0; i < n; i++) {
      const off = HEADER_BYTES + ((tail + i) & this.mask) * this.slotBytes;
      const kind = b[off];
      if (!wants(kind)) continue;
      const len = b[off + 2] | (b[off + 3] << 8);
      const start = off + SLOT_HEADER;
      visit(kind, b.toString("utf8", start, start + len), b[off + 1]);
    }
    Atomics.store(w, W_TAIL, (tail + n) | 0);
    return n;
  }

  /** Consumer: discards every waiting record (e.g. left from a previous trace session). */
  skipAll(): number {
    const head = Atomics.load(this.words, W_HEAD);
    const n = (head - this.words[W_TAIL]) | 0;
    Atomics.store(this.words, W_TAIL, head);
    return n;
  }

  /** Records dropped by the producer so far (mod 2^32). */
  dropped(): number {
    return Atomics.load(this.words, W_DROPPED) >>> 0;
  }

  stats(): RingStats {
    const head = Atomics.load(this.words, W_HEAD);
    const tail = Atomics.load(this.words, W_TAIL);
    return {
      slots: this.slots,
      slotBytes: this.slotBytes,
      written: head >>> 0,
      dropped: this.dropped(),
      truncated: Atomics.load(this.words, W_TRUNCATED) >>> 0,
      pending: (head - tail) | 0,
    };
  }
}
