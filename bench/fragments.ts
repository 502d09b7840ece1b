// Per-call cost of the fragment table (src/fragments/table.ts) on its paths: later()
// forwarding to a known target (the common case), first() creating entries while old ones
// expire (steady churn), and the out-of-order path (store copies, first(), drainReady).
// Median of several runs; a simulated clock, so the TTL logic runs as in the daemon.
import { pathToFileURL } from "node:url";
import {
  DEFAULT_FRAG_CONFIG,
  FragmentTable,
  type FragTableConfig,
} from "../src/fragments/table.js";
import { FragKind, PacketInfo } from "../src/packet/index.js";

const RUNS = 7;
const CALLS = 1 << 20;

interface Result {
  name: string;
  median: number;
  unit: string;
}

/**
 * `n` datagram keys, and one PacketInfo that `use` fills with key k as classify() would:
 * the daemon reuses a single PacketInfo, so the bench does too.
 */
class Keys {
  readonly info = new PacketInfo();
  private readonly src: Uint32Array;
  private readonly dst: Uint32Array;
  private readonly ids: Uint32Array;
  constructor(
    readonly n: number,
    readonly family: 4 | 6,
  ) {
    this.src = new Uint32Array(n * 4);
    this.dst = new Uint32Array(n * 4);
    this.ids = new Uint32Array(n);
    const i = new PacketInfo();
    for (let k = 0; k < n; k++) {
      if (family === 4) {
        i.src.set([10, 1, (k >> 8) & 0xff, k & 0xff]);
        i.dst.set([10, 2, 0, 1]);
      } else {
        i.src.set([0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (k >> 8) & 0xff, k & 0xff]);
        i.dst.set([0xfd, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
      }
      this.src.set(i.src32, k * 4);
      this.dst.set(i.dst32, k * 4);
      this.ids[k] = (k * 2654435761) >>> (family === 4 ? 16 : 0);
    }
    this.info.family = family;
    this.info.proto = 17;
    this.info.fragKind = FragKind.Later;
  }
  /** Fills `info` with key k (and returns it). */
  use(k: number): PacketInfo {
    const i = this.info;
    const b = k * 4;
    const s = i.src32;
    const d = i.dst32;
    s[0] = this.src[b];
    d[0] = this.dst[b];
    if (this.family === 6) {
      s[1] = this.src[b + 1];
      s[2] = this.src[b + 2];
      s[3] = this.src[b + 3];
      d[1] = this.dst[b + 1];
      d[2] = this.dst[b + 2];
      d[3] = this.dst[b + 3];
    }
    i.fragId = this.ids[k];
    return i;
  }
}

/** Median ns per unit of work of `run` (which returns the units it did). */
function measure(run: () => number): number {
  run(); // warm-up: let the JIT settle
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    const units = run();
    times.push(Number(process.hrtime.bigint() - t0) / units);
  }
  times.sort((a, b) => a - b);
  return times[RUNS >> 1];
}

/** later() on datagrams whose first fragment was seen: Forward, no copy. */
function forwardKnown(family: 4 | 6): number {
  const cfg: FragTableConfig = { ...DEFAULT_FRAG_CONFIG, ttlMs: 60_000 };
  const t = new FragmentTable(cfg, 1);
  const keys = new Keys(8192, family);
  for (let k = 0; k < 8192; k++) t.first(keys.use(k), 1, 0);
  const buf = new Uint8Array(1500);
  let now = 0;
  return measure(() => {
    let acc = 0;
    for (let n = 0; n < CALLS; n++) {
      acc += t.later(keys.use(n & 8191), buf, 0, 1500, now) + t.target;
    }
    now += 1;
    if (acc === -1) console.log(acc);
    return CALLS;
  });
}

/**
 * first() for new datagrams at a rate that fills the table once per TTL: every call
 * creates an entry and (in steady state) expires one, with expire() once per 64 calls
 * as a daemon would call it once per batch.
 */
function churn(): number {
  const t = new FragmentTable(DEFAULT_FRAG_CONFIG, 1);
  const keys = new Keys(65536, 4);
  const step = DEFAULT_FRAG_CONFIG.ttlMs / 8192; // 8192 live entries
  let now = 0;
  let id = 0;
  return measure(() => {
    let acc = 0;
    for (let n = 0; n < CALLS; n++) {
      const i = keys.use(n & 65535);
      i.fragId = id++ & 0xffff;
      now += step;
      acc += t.first(i, 3, now);
      if ((n & 63) === 0) acc += t.expire(now);
    }
    if (acc === -1) console.log(acc);
    return CALLS;
  });
}

/** Per datagram, first fragment last: 2 later fragments of `len` stored, first(), drain. */
function outOfOrder(len: number): number {
  const t = new FragmentTable(DEFAULT_FRAG_CONFIG, 1);
  const keys = new Keys(4096, 4);
  const buf = new Uint8Array(len);
  const datagrams = CALLS >> 3;
  let now = 0;
  let sink = 0;
  const fn = (b: Uint8Array, off: number): void => {
    sink += b[off];
  };
  let id = 0;
  return measure(() => {
    for (let n = 0; n < datagrams; n++) {
      const i = keys.use(n & 4095);
      i.fragId = id++ & 0xffff;
      now += 0.01;
      t.later(i, buf, 0, len, now);
      t.later(i, buf, 0, len, now);
      t.first(i, 3, now);
      t.drainReady(fn);
    }
    if (sink === -1) console.log(sink);
    return datagrams;
  });
}

/** later() for a poisoned datagram: Drop at once. */
function dropPoisoned(): number {
  const t = new FragmentTable({ ...DEFAULT_FRAG_CONFIG, maxFragmentBytes: 100 }, 1);
  const keys = new Keys(8192, 4);
  const buf = new Uint8Array(1500);
  for (let k = 0; k < 8192; k++) t.later(keys.use(k), buf, 0, 1500, 0); // too big: poisons
  return measure(() => {
    let acc = 0;
    for (let n = 0; n < CALLS; n++) acc += t.later(keys.use(n & 8191), buf, 0, 1500, 1);
    if (acc === -1) console.log(acc);
    return CALLS;
  });
}

export function benchFragments(): Result[] {
  const call = "ns/call";
  return [
    { name: "later() forward, known target, IPv4", median: forwardKnown(4), unit: call },
    { name: "later() forward, known target, IPv6", median: forwardKnown(6), unit: call },
    { name: "first() new entry + expiry churn, full table", median: churn(), unit: call },
    { name: "later() drop, poisoned datagram", median: dropPoisoned(), unit: call },
    {
      name: "out of order, 2 x 1480 B stored + first() + drain",
      median: outOfOrder(1480),
      unit: "ns/datagram",
    },
    {
      name: "out of order, 2 x 64 B stored + first() + drain",
      median: outOfOrder(64),
      unit: "ns/datagram",
    },
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of benchFragments()) console.log(`${r.name}: ${r.median.toFixed(1)} ${r.unit}`);
}
