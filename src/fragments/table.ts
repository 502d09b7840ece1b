// Fragment tracking: remembers, per fragmented datagram, the target its first fragment
// went to, so that its later fragments (which carry no ports) follow it; stores copies of
// fragments that arrive before the first one and hands them back for re-injection once
// the first one is seen. Pure: no I/O, no clock of its own (`now` in ms comes with every
// call, so tests simulate hours in milliseconds), no exceptions on the packet path. Every
// structure is a preallocated typed array; the one allocation is a short-lived view per
// stored (out-of-order) fragment copy, see FragmentPool.store.
//
// Layout:
// - a hash table of `entries` buckets (head index per bucket), chained through one pool
//   of `entries + extraBuckets` entries; a chain holds at most MAX_CHAIN entries, so a
//   lookup costs at most MAX_CHAIN key compares whatever the input;
// - the bucket is a seeded hash (secret random seed by default) of the datagram key: the
//   kernel's jhash_3words(src, dst, proto|id) for IPv4 (as Linux's own IPv4 fragment
//   queues did), lookup3 jhash over src . dst . id for IPv6; with the seed secret, an
//   outsider cannot aim many datagrams at one bucket;
// - an entry is one 16-word record (64 bytes: key, chain link, state, target, fragment
//   list), so a lookup touches the bucket head and one record per chain step: at 8192
//   live datagrams the table does not fit in L1/L2, and cache misses are most of the cost;
// - entries live a fixed ttlMs from creation, never longer (a datagram's fragments are
//   sent back to back; refreshing on use would only let a stream of fragments with one
//   key pin an entry). So creation order is expiry order: a FIFO ring of entries makes
//   expiry exact and O(expired), with no scan and no timer. The table's clock is the
//   latest `now` it was given (a `now` that goes back counts as the latest), which keeps
//   the ring sorted;
// - stored fragments live in a FragmentPool, linked per entry in arrival order; when the
//   first fragment arrives the entry's list moves to the ready list in O(1).

import { jhash3Words, jhashWords, reciprocalScale } from "../hash/jhash.js";
import type { PacketInfo } from "../packet/index.js";
import { type FragTableConfig, validateFragConfig } from "./config.js";
import { FragmentPool, NIL } from "./pool.js";

export {
  DEFAULT_FRAG_CONFIG,
  FRAG_CONFIG_LIMITS,
  type FragTableConfig,
  validateFragConfig,
} from "./config.js";

/**
 * What first() or later() did with a fragment: the one answer from which the daemon
 * derives its verdict, its counters and its traces (each outcome is counted in exactly
 * one FragCounters field).
 */
export const FragOutcome = {
  /** later(): the datagram's target is known: send the fragment to `table.target`. */
  Forwarded: 0,
  /** later(): a copy is held until the first fragment comes: drop the original. */
  Held: 1,
  /** later(): no free slot in the fragment pool; the datagram is poisoned. */
  DroppedPoolFull: 2,
  /** later(): larger than maxFragmentBytes (or not inside buf); the datagram is poisoned. */
  DroppedTooBig: 3,
  /** later(): no entry free (or the bucket's chain is full) for a new datagram. */
  DroppedTableFull: 4,
  /** later(): the datagram was already poisoned. */
  DroppedPoisoned: 5,
  /** first(): a new datagram, now tracked; send it to `table.target`. */
  FirstTracked: 6,
  /** first(): completes a datagram whose later fragments were held (`readied` of them). */
  FirstCompleted: 7,
  /** first(): the datagram's target was known already; `table.target` keeps it. */
  FirstDuplicate: 8,
  /** first(): the datagram is poisoned (a fragment was lost); `table.target` is the one given. */
  FirstPoisoned: 9,
  /** first(): no room for an entry: its later fragments cannot follow it. */
  FirstUntracked: 10,
} as const;
export type FragOutcome = (typeof FragOutcome)[keyof typeof FragOutcome];

/** Names of the outcomes, indexed by FragOutcome (traces, tests). */
export const FRAG_OUTCOME_NAMES: readonly string[] = [
  "forwarded",
  "held",
  "pool-full",
  "too-big",
  "table-full",
  "poisoned",
  "first",
  "first-completed",
  "first-duplicate",
  "first-poisoned",
  "first-untracked",
];

/** What the daemon does with the original packet. */
export const FragVerdict = {
  /** Send it to `table.target`. */
  Forward: 0,
  /** A copy is stored: drop the original; the copy comes back from drainReady(). */
  Stored: 1,
  /** Drop it (counted by reason). */
  Drop: 2,
} as const;
export type FragVerdict = (typeof FragVerdict)[keyof typeof FragVerdict];

/** The verdict an outcome stands for: every first fragment is forwarded. */
export function fragVerdict(outcome: FragOutcome): FragVerdict {
  if (outcome === FragOutcome.Forwarded || outcome >= FragOutcome.FirstTracked) {
    return FragVerdict.Forward;
  }
  return outcome === FragOutcome.Held ? FragVerdict.Stored : FragVerdict.Drop;
}

/**
 * Longest hash chain. With a secret seed and a load factor near 1, a chain of 16 is
 * practically never reached by chance (P ~ 1e-13 per bucket at load 1.125); it bounds the
 * per-packet cost against input that collides anyway. A datagram whose chain is full is
 * treated as "table full".
 */
export const MAX_CHAIN = 16;

// Entry record: 16 int32 words.
const R_SRC = 0; // 4 words; IPv4 uses the first, the others stay 0
const R_DST = 4; // 4 words
const R_ID = 8; // fragment id (16 bits IPv4, 32 bits IPv6)
const R_META = 9; // family << 8 | protocol (0 for IPv6)
const R_NEXT = 10; // next entry in the bucket's chain
const R_STATE = 11;
const R_TARGET = 12;
const R_BUCKET = 13;
const R_FHEAD = 14; // stored fragments, oldest first (pool slots)
const R_FTAIL = 15;
const STRIDE = 16;
const KEY_WORDS = 10;
const META4 = 0x400;
const META6 = 0x600;
const ST_FREE = 0;
/** No first fragment yet: later fragments are stored. */
const ST_WAITING = 1;
/** First fragment seen: later fragments are forwarded to its target. */
const ST_KNOWN = 2;
/** A fragment was dropped: the datagram is lost, its other fragments are dropped at once. */
const ST_POISONED = 3;

/**
 * Monotonic counters; the field names are the JSON keys of `nflb stats`. Identities:
 * - laterSeen = forwarded + stored + droppedPoolFull + droppedTooBig + droppedTableFull
 *   + droppedPoisoned (every later() call ends in exactly one of them);
 * - stored = reinjected + droppedExpired + discardedPoisoned + table.stored (every stored
 *   copy is re-injected, dropped at expiry, freed when its datagram is poisoned, or still
 *   held);
 * - firstSeen = first() calls; firstDuplicate, firstPoisoned, firstUntracked are subsets.
 */
export class FragCounters {
  /** first() calls. */
  firstSeen = 0;
  /** first() for a datagram whose target was already known (kept the first target). */
  firstDuplicate = 0;
  /** first() for a poisoned datagram. */
  firstPoisoned = 0;
  /** first() that found no room for an entry: its later fragments cannot follow it. */
  firstUntracked = 0;
  /** later() calls. */
  laterSeen = 0;
  /** later() answered Forward. */
  forwarded = 0;
  /** later() stored a copy. */
  stored = 0;
  /** Stored copies handed to drainReady's callback. */
  reinjected = 0;
  /** Entries removed at expiry. */
  expiredEntries = 0;
  /** Stored copies dropped because their entry expired before its first fragment came. */
  droppedExpired = 0;
  /** later() dropped: no free slot in the fragment pool (poisons the datagram). */
  droppedPoolFull = 0;
  /** later() dropped: larger than maxFragmentBytes, or not inside buf (poisons). */
  droppedTooBig = 0;
  /** later() dropped: no entry free (or the bucket's chain is full) for a new datagram. */
  droppedTableFull = 0;
  /** later() dropped because the datagram was already poisoned. */
  droppedPoisoned = 0;
  /** Stored copies freed when their datagram got poisoned. */
  discardedPoisoned = 0;
  /** Entries poisoned. */
  poisoned = 0;
}

/** Random 32-bit seed: bucket choice an outsider cannot predict. */
function randomSeed(): number {
  return (Math.random() * 0x100000000) >>> 0;
}

export class FragmentTable {
  /** Where to send the packet: set by later() when it answers Forwarded, and by first(). */
  target = 0;
  /** The last first()/later() call found the datagram poisoned (the packet is useless). */
  lastPoisoned = false;
  /** Held fragments the last first() made ready (drainReady hands them out). */
  readied = 0;
  readonly counters = new FragCounters();
  readonly config: Readonly<FragTableConfig>;
  /** Datagrams the table can track at once: entries + extraBuckets. */
  readonly capacity: number;

  private readonly nBuckets: number;
  private readonly ttl: number;
  private readonly maxBytes: number;
  private readonly seed: number;
  /** First entry of each bucket's chain. */
  private readonly heads: Int32Array;
  /** Entry records, STRIDE words each. */
  private readonly rec: Int32Array;
  // Per entry, off the lookup path:
  private readonly created: Float64Array;
  private readonly fragCount: Int32Array;
  // Free entries (stack) and live entries in creation order (ring).
  private readonly freeStack: Int32Array;
  private freeTop: number;
  private readonly fifo: Int32Array;
  private fifoHead = 0;
  private fifoCount = 0;
  // Stored fragments and the ready list (FIFO through pool.next).
  private readonly pool: FragmentPool;
  private readyHead = NIL;
  private readyTail = NIL;
  private readyCount = 0;
  /** Latest `now` seen: time never goes back inside the table (FIFO order relies on it). */
  private clock = Number.NEGATIVE_INFINITY;
  // The current packet's key, set by setKey().
  private readonly k = new Int32Array(KEY_WORDS);
  private readonly k32 = new Uint32Array(this.k.buffer);
  private kFamily = 0;
  private lastBucket = 0;
  private lastChainLen = 0;

  /**
   * @param seed bucket hash seed; random by default (pass one for reproducible tests).
   * Throws RangeError on a bad configuration (validateFragConfig).
   */
  constructor(cfg: FragTableConfig, seed: number = randomSeed()) {
    validateFragConfig(cfg);
    this.config = Object.freeze({ ...cfg });
    this.nBuckets = cfg.entries;
    const cap = cfg.entries + cfg.extraBuckets;
    this.capacity = cap;
    this.ttl = cfg.ttlMs;
    this.maxBytes = cfg.maxFragmentBytes;
    this.seed = seed >>> 0;
    this.heads = new Int32Array(cfg.entries).fill(NIL);
    this.rec = new Int32Array(cap * STRIDE);
    this.created = new Float64Array(cap);
    this.fragCount = new Int32Array(cap);
    this.freeStack = new Int32Array(cap);
    for (let i = 0; i < cap; i++) this.freeStack[i] = cap - 1 - i;
    this.freeTop = cap;
    this.fifo = new Int32Array(cap);
    this.pool = new FragmentPool(cfg.maxFragments, cfg.maxFragmentBytes);
  }

  /** Entries in use (datagrams tracked). */
  get size(): number {
    return this.fifoCount;
  }

  /** Fragments held: waiting for their first fragment, or ready for re-injection. */
  get stored(): number {
    return this.pool.used;
  }

  /** Fragments ready for drainReady(). */
  get ready(): number {
    return this.readyCount;
  }

  /**
   * A first fragment whose target the daemon computed. Creates the entry, or completes
   * one that was waiting (its stored fragments become ready, in arrival order, and
   * `readied` says how many). Sets `this.target` to the target the whole datagram uses:
   * the one given, except for a duplicate first fragment (retransmission with the same
   * id, or a new datagram reusing the id within ttlMs), which keeps the first target, so
   * the datagram's fragments never split. Forward the first fragment to `this.target`.
   */
  first(info: PacketInfo, target: number, now: number): FragOutcome {
    const c = this.counters;
    c.firstSeen++;
    this.tick(now);
    this.setKey(info);
    this.lastPoisoned = false;
    this.readied = 0;
    let e = this.lookup();
    if (e === NIL) {
      e = this.create(ST_KNOWN);
      this.target = target;
      if (e === NIL) {
        c.firstUntracked++;
        return FragOutcome.FirstUntracked;
      }
      this.rec[e * STRIDE + R_TARGET] = target;
      return FragOutcome.FirstTracked;
    }
    const r = e * STRIDE;
    const s = this.rec[r + R_STATE];
    if (s === ST_WAITING) {
      this.rec[r + R_STATE] = ST_KNOWN;
      this.rec[r + R_TARGET] = target;
      this.target = target;
      this.readied = this.moveToReady(e);
      return FragOutcome.FirstCompleted;
    }
    if (s === ST_KNOWN) {
      c.firstDuplicate++;
      this.target = this.rec[r + R_TARGET];
      return FragOutcome.FirstDuplicate;
    }
    // Poisoned: a fragment of this datagram is already lost, so the target could never
    // reassemble it. The entry stays poisoned; the daemon may drop this fragment too.
    c.firstPoisoned++;
    this.lastPoisoned = true;
    this.target = target;
    return FragOutcome.FirstPoisoned;
  }

  /**
   * A later fragment (or a first one whose stored target the daemon wants). Forwarded
   * with `this.target` set when the datagram's target is known; otherwise stores a copy
   * of buf[off, off+len) (Held: drop the original, the copy returns through drainReady
   * after the first fragment), or drops it (Dropped*). A drop of a fragment of a tracked
   * datagram poisons it: the datagram cannot be reassembled anyway, so its stored copies
   * are freed and its further fragments are dropped at once until the entry expires.
   */
  later(info: PacketInfo, buf: Uint8Array, off: number, len: number, now: number): FragOutcome {
    const c = this.counters;
    c.laterSeen++;
    this.tick(now);
    this.setKey(info);
    this.lastPoisoned = false;
    let e = this.lookup();
    if (e !== NIL) {
      const s = this.rec[e * STRIDE + R_STATE];
      if (s === ST_KNOWN) {
        this.target = this.rec[e * STRIDE + R_TARGET];
        c.forwarded++;
        return FragOutcome.Forwarded;
      }
      if (s === ST_POISONED) {
        c.droppedPoisoned++;
        this.lastPoisoned = true;
        return FragOutcome.DroppedPoisoned;
      }
    } else {
      e = this.create(ST_WAITING);
      if (e === NIL) {
        c.droppedTableFull++;
        return FragOutcome.DroppedTableFull;
      }
    }
    // Waiting for the first fragment: keep a copy. `>>> 0` rejects negatives, fractions
    // and NaN; bounds outside buf are a caller bug, reported as too big rather than thrown.
    if (len > this.maxBytes || len >>> 0 !== len || off >>> 0 !== off || off + len > buf.length) {
      c.droppedTooBig++;
      this.poison(e);
      return FragOutcome.DroppedTooBig;
    }
    const slot = this.pool.store(buf, off, len);
    if (slot === NIL) {
      c.droppedPoolFull++;
      this.poison(e);
      return FragOutcome.DroppedPoolFull;
    }
    const r = e * STRIDE;
    const tail = this.rec[r + R_FTAIL];
    if (tail === NIL) this.rec[r + R_FHEAD] = slot;
    else this.pool.next[tail] = slot;
    this.rec[r + R_FTAIL] = slot;
    this.fragCount[e]++;
    c.stored++;
    return FragOutcome.Held;
  }

  /**
   * Hands up to `max` ready fragments to fn, oldest first (the bytes are valid only during
   * the call: they live in the pool) and frees them, even if fn throws. Returns the count.
   */
  drainReady(fn: (buf: Uint8Array, off: number, len: number) => void, max = Infinity): number {
    const pool = this.pool;
    const bytes = pool.bytes;
    let n = 0;
    while (this.readyHead !== NIL && n < max) {
      const slot = this.readyHead;
      this.readyHead = pool.next[slot];
      if (this.readyHead === NIL) this.readyTail = NIL;
      this.readyCount--;
      this.counters.reinjected++;
      n++;
      try {
        fn(bytes, pool.offset(slot), pool.len[slot]);
      } finally {
        pool.free(slot);
      }
    }
    return n;
  }

  /**
   * Removes every entry whose lifetime [created, created + ttlMs) has ended at `now`, and
   * drops (counts) the fragments they still stored. O(entries removed): entries expire in
   * creation order, so it pops a FIFO and never scans. first() and later() call it too
   * when the oldest entry is due, so a lookup never sees an expired entry; the daemon calls
   * it (e.g. once per batch or on a timer) so that the table also empties without traffic.
   * Returns how many entries were removed.
   */
  expire(now: number): number {
    if (now > this.clock) this.clock = now; // `>` also ignores NaN
    const limit = this.clock - this.ttl;
    const fifo = this.fifo;
    const cap = this.capacity;
    let n = 0;
    while (this.fifoCount > 0) {
      const e = fifo[this.fifoHead];
      if (this.created[e] > limit) break;
      this.fifoHead = this.fifoHead + 1 === cap ? 0 : this.fifoHead + 1;
      this.fifoCount--;
      this.remove(e);
      n++;
    }
    return n;
  }

  /** Advances the table's clock; expires due entries first if the oldest one is due. */
  private tick(now: number): void {
    // `>` also ignores NaN; a clock going back keeps the latest time.
    if (now > this.clock) {
      if (this.fifoCount > 0 && this.created[this.fifo[this.fifoHead]] <= now - this.ttl) {
        this.expire(now);
      } else {
        this.clock = now;
      }
    }
  }

  /** Builds the datagram key of `info` in this.k (record layout) and its bucket. */
  private setKey(info: PacketInfo): void {
    const k = this.k;
    const s = info.src32;
    const d = info.dst32;
    let h: number;
    if (info.family === 4) {
      // (src, dst, proto, id16): the id is unique per (src, dst, proto) only.
      this.kFamily = 4;
      k[R_SRC] = s[0];
      k[1] = 0;
      k[2] = 0;
      k[3] = 0;
      k[R_DST] = d[0];
      k[5] = 0;
      k[6] = 0;
      k[7] = 0;
      k[R_ID] = ((info.proto & 0xff) << 16) | (info.fragId & 0xffff);
      k[R_META] = META4;
      h = jhash3Words(k[R_SRC], k[R_DST], k[R_ID], this.seed);
    } else {
      // (src, dst, id32), no protocol: a later fragment reports the fragment header's
      // next header, which can differ from the first fragment's upper-layer protocol.
      this.kFamily = 6;
      k[0] = s[0];
      k[1] = s[1];
      k[2] = s[2];
      k[3] = s[3];
      k[4] = d[0];
      k[5] = d[1];
      k[6] = d[2];
      k[7] = d[3];
      k[R_ID] = info.fragId;
      k[R_META] = META6;
      h = jhashWords(this.k32, 9, this.seed); // src . dst . id, contiguous in the record
    }
    this.lastBucket = reciprocalScale(h, this.nBuckets);
  }

  /** The entry with key this.k, or NIL; leaves the chain length in lastChainLen. */
  private lookup(): number {
    const k = this.k;
    const rec = this.rec;
    let n = 0;
    let e = this.heads[this.lastBucket];
    if (this.kFamily === 4) {
      const src = k[R_SRC];
      const dst = k[R_DST];
      const id = k[R_ID];
      while (e !== NIL) {
        const r = e * STRIDE;
        if (
          rec[r + R_SRC] === src &&
          rec[r + R_DST] === dst &&
          rec[r + R_ID] === id &&
          rec[r + R_META] === META4
        ) {
          return e;
        }
        e = rec[r + R_NEXT];
        n++;
      }
    } else {
      while (e !== NIL) {
        const r = e * STRIDE;
        if (
          rec[r + R_ID] === k[R_ID] &&
          rec[r + R_META] === META6 &&
          rec[r + R_SRC] === k[R_SRC] &&
          rec[r + R_SRC + 1] === k[R_SRC + 1] &&
          rec[r + R_SRC + 2] === k[R_SRC + 2] &&
          rec[r + R_SRC + 3] === k[R_SRC + 3] &&
          rec[r + R_DST] === k[R_DST] &&
          rec[r + R_DST + 1] === k[R_DST + 1] &&
          rec[r + R_DST + 2] === k[R_DST + 2] &&
          rec[r + R_DST + 3] === k[R_DST + 3]
        ) {
          return e;
        }
        e = rec[r + R_NEXT];
        n++;
      }
    }
    this.lastChainLen = n;
    return NIL;
  }

  /** A new entry for key this.k in lastBucket (after a lookup miss), or NIL if no room. */
  private create(st: number): number {
    if (this.freeTop === 0 || this.lastChainLen >= MAX_CHAIN) return NIL;
    const e = this.freeStack[--this.freeTop];
    const r = e * STRIDE;
    const rec = this.rec;
    rec.set(this.k, r);
    const bucket = this.lastBucket;
    rec[r + R_NEXT] = this.heads[bucket];
    this.heads[bucket] = e;
    rec[r + R_STATE] = st;
    rec[r + R_TARGET] = 0;
    rec[r + R_BUCKET] = bucket;
    rec[r + R_FHEAD] = NIL;
    rec[r + R_FTAIL] = NIL;
    this.fragCount[e] = 0;
    this.created[e] = this.clock;
    let at = this.fifoHead + this.fifoCount;
    if (at >= this.capacity) at -= this.capacity;
    this.fifo[at] = e;
    this.fifoCount++;
    return e;
  }

  /** Unlinks an entry (already off the FIFO), drops its stored fragments, frees it. */
  private remove(e: number): void {
    const rec = this.rec;
    const r = e * STRIDE;
    const bucket = rec[r + R_BUCKET];
    let p = this.heads[bucket];
    if (p === e) {
      this.heads[bucket] = rec[r + R_NEXT];
    } else {
      while (rec[p * STRIDE + R_NEXT] !== e) p = rec[p * STRIDE + R_NEXT];
      rec[p * STRIDE + R_NEXT] = rec[r + R_NEXT];
    }
    rec[r + R_NEXT] = NIL;
    this.counters.droppedExpired += this.freeFragments(e);
    this.counters.expiredEntries++;
    rec[r + R_STATE] = ST_FREE;
    this.freeStack[this.freeTop++] = e;
  }

  private poison(e: number): void {
    this.rec[e * STRIDE + R_STATE] = ST_POISONED;
    this.counters.poisoned++;
    this.counters.discardedPoisoned += this.freeFragments(e);
  }

  /** Frees the fragments an entry stores; returns how many. */
  private freeFragments(e: number): number {
    const n = this.fragCount[e];
    if (n === 0) return 0;
    const pool = this.pool;
    const r = e * STRIDE;
    let f = this.rec[r + R_FHEAD];
    while (f !== NIL) {
      const next = pool.next[f];
      pool.free(f);
      f = next;
    }
    this.rec[r + R_FHEAD] = NIL;
    this.rec[r + R_FTAIL] = NIL;
    this.fragCount[e] = 0;
    return n;
  }

  /** Appends an entry's stored fragments to the ready list; returns how many. */
  private moveToReady(e: number): number {
    const n = this.fragCount[e];
    if (n === 0) return 0;
    const r = e * STRIDE;
    const head = this.rec[r + R_FHEAD];
    if (this.readyTail === NIL) this.readyHead = head;
    else this.pool.next[this.readyTail] = head;
    this.readyTail = this.rec[r + R_FTAIL];
    this.readyCount += n;
    this.rec[r + R_FHEAD] = NIL;
    this.rec[r + R_FTAIL] = NIL;
    this.fragCount[e] = 0;
    return n;
  }
}
