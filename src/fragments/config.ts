// Sizes and lifetime of the fragment-tracking table, their defaults and their validation.
// Pure: no I/O.

export interface FragTableConfig {
  /**
   * Hash buckets. The table tracks up to `entries + extraBuckets` datagrams: every entry
   * comes from one shared pool, so collisions cost no capacity until the pool is empty.
   */
  entries: number;
  /** Entries beyond one per bucket: headroom for collisions (chains are also capped). */
  extraBuckets: number;
  /** Fragments stored at once (waiting for their first fragment or for re-injection). */
  maxFragments: number;
  /** Bytes per stored fragment; a larger fragment is dropped (and poisons its datagram). */
  maxFragmentBytes: number;
  /** An entry lives this long after it was created (by the datagram's first packet seen). */
  ttlMs: number;
}

/**
 * Defaults.
 *
 * ttlMs = 500. Linux keeps a reassembly queue for ipfrag_time = 30 s because an end host
 * must wait for fragments that crossed the whole path. The load balancer only needs an
 * entry for as long as the fragments of one datagram are in flight through it: a sender
 * emits them back to back, so they arrive within the path's reordering (well under 10 ms),
 * and a fragment stored out of order returns through the TUN device and passes the queue
 * a second time. The queue is the long pole: 16384 packets (the daemon's default
 * --qlength) drain in ~65-80 ms at 200-250k pps, and this VM was measured stalling a busy
 * loop for up to 270 ms. 500 ms covers a full queue plus such a stall. It is short enough
 * that the table turns over fast: 9216 entries / 0.5 s = ~18k fragmented datagrams per
 * second sustained, i.e. >= 37k fragment packets/s, ~15% of all a 250k pps daemon
 * handles; an unclaimed out-of-order fragment holds its pool slot for at most 0.5 s; and
 * a 16-bit IPv4 id would need 65536 datagrams between one address pair within 0.5 s to
 * be reused while its entry lives.
 *
 * entries 8192 + extraBuckets 1024: load factor <= 1.125, chains of a few entries.
 * maxFragments 256 x maxFragmentBytes 9216 (a jumbo-frame MTU; no fragment is larger than
 * the MTU it crossed): a 2.4 MB pool. It only holds fragments that overtook their first
 * fragment, and only until it arrives (usually within milliseconds): 256 slots hold,
 * e.g., 128 three-fragment datagrams whose first fragment came last, all at once.
 */
export const DEFAULT_FRAG_CONFIG: Readonly<FragTableConfig> = Object.freeze({
  entries: 8192,
  extraBuckets: 1024,
  maxFragments: 256,
  maxFragmentBytes: 9216,
  ttlMs: 500,
});

/** Upper bounds accepted by validateFragConfig (and why). */
export const FRAG_CONFIG_LIMITS = Object.freeze({
  /** reciprocalScale needs fewer than 2^21 buckets to stay exact; 1M entries is plenty. */
  entries: 1 << 20,
  extraBuckets: 1 << 20,
  maxFragments: 1 << 20,
  /** An IPv4 router must forward 68-byte datagrams unfragmented (RFC 791): the smallest MTU. */
  minFragmentBytes: 68,
  /** The IP total / payload length field: no fragment is larger. */
  maxFragmentBytes: 65535,
  /** Bytes of the fragment pool (maxFragments x maxFragmentBytes): 1 GiB. */
  poolBytes: 1 << 30,
  /** Linux's own reassembly timeout is 30 s; longer than a minute makes no sense here. */
  ttlMs: 60_000,
});

function checkInt(name: string, v: unknown, min: number, max: number): void {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(
      `fragment table: ${name} must be an integer in ${min}..${max}, got ${String(v)}`,
    );
  }
}

/** Throws a RangeError naming the first field out of range. */
export function validateFragConfig(cfg: FragTableConfig): void {
  const L = FRAG_CONFIG_LIMITS;
  checkInt("entries", cfg.entries, 1, L.entries);
  checkInt("extraBuckets", cfg.extraBuckets, 0, L.extraBuckets);
  checkInt("maxFragments", cfg.maxFragments, 0, L.maxFragments);
  checkInt("maxFragmentBytes", cfg.maxFragmentBytes, L.minFragmentBytes, L.maxFragmentBytes);
  const pool = cfg.maxFragments * cfg.maxFragmentBytes;
  if (pool > L.poolBytes) {
    throw new RangeError(
      `fragment table: maxFragments x maxFragmentBytes = ${pool} bytes exceeds ${L.poolBytes}`,
    );
  }
  const ttl = cfg.ttlMs;
  if (typeof ttl !== "number" || !Number.isFinite(ttl) || ttl <= 0 || ttl > L.ttlMs) {
    throw new RangeError(
      `fragment table: ttlMs must be a number of milliseconds in (0, ${L.ttlMs}], got ${String(ttl)}`,
    );
  }
}
