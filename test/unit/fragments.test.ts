// The fragment-tracking table: verdicts, keys, re-injection order and bytes, TTL with an
// injected clock, poisoning, bounds, real fragments through classify(), and a seeded
// 1M-call fuzz that checks the bounds after every call and the counter identities.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_FRAG_CONFIG,
  FRAG_OUTCOME_NAMES,
  type FragCounters,
  FragmentTable,
  FragOutcome,
  type FragTableConfig,
  FragVerdict,
  fragVerdict,
  MAX_CHAIN,
  validateFragConfig,
} from "../../src/fragments/table.js";
import { classify, defaultClassifyOptions, FragKind, PacketInfo } from "../../src/packet/index.js";
import { readPcap } from "../helpers/pcap.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const FIXTURES = join(ROOT, "test", "fixtures");
const SEED = 0x1234abcd;
/** The fuzz tests' seed; set FRAG_FUZZ_SEED to try others. */
const FUZZ_SEED = Number(process.env.FRAG_FUZZ_SEED ?? SEED);
const TTL = DEFAULT_FRAG_CONFIG.ttlMs;

function cfg(over: Partial<FragTableConfig> = {}): FragTableConfig {
  return { ...DEFAULT_FRAG_CONFIG, ...over };
}

function table(over: Partial<FragTableConfig> = {}): FragmentTable {
  return new FragmentTable(cfg(over), SEED);
}

/** An IPv4 fragment's PacketInfo: 10.0.0.s -> 10.9.0.d, proto, id. */
function v4(id: number, s = 1, d = 1, proto = 17, kind: FragKind = FragKind.Later): PacketInfo {
  const i = new PacketInfo();
  i.family = 4;
  i.proto = proto;
  i.fragKind = kind;
  i.fragId = id;
  i.src.set([10, 0, 0, s]);
  i.dst.set([10, 9, 0, d]);
  return i;
}

/** An IPv6 fragment's PacketInfo: fd00::s -> fd09::d, proto, id. */
function v6(id: number, s = 1, d = 1, proto = 17, kind: FragKind = FragKind.Later): PacketInfo {
  const i = new PacketInfo();
  i.family = 6;
  i.proto = proto;
  i.fragKind = kind;
  i.fragId = id;
  i.src.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, s]);
  i.dst.set([0xfd, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, d]);
  return i;
}

function firstOf(i: PacketInfo): PacketInfo {
  const f = new PacketInfo();
  f.family = i.family;
  f.proto = i.proto;
  f.fragKind = FragKind.First;
  f.fragId = i.fragId;
  f.src.set(i.src);
  f.dst.set(i.dst);
  return f;
}

/** `n` bytes tagged with `tag`, so a copy can be recognised. */
function bytes(n: number, tag: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (tag * 31 + i) & 0xff;
  return b;
}

/** later() as the verdict it stands for. */
function later(t: FragmentTable, i: PacketInfo, b: Uint8Array, now: number): number {
  return fragVerdict(t.later(i, b, 0, b.length, now));
}

/** first(), answering how many held fragments it made ready. */
function first(t: FragmentTable, i: PacketInfo, target: number, now: number): number {
  t.first(i, target, now);
  return t.readied;
}

function drain(t: FragmentTable): Uint8Array[] {
  const out: Uint8Array[] = [];
  t.drainReady((buf, off, len) => out.push(buf.slice(off, off + len)));
  return out;
}

/** The two counter identities documented on FragCounters. */
function checkIdentities(t: FragmentTable): void {
  const c: FragCounters = t.counters;
  assert.equal(
    c.laterSeen,
    c.forwarded +
      c.stored +
      c.droppedPoolFull +
      c.droppedTooBig +
      c.droppedTableFull +
      c.droppedPoisoned,
    "every later() call ends in exactly one outcome",
  );
  assert.equal(
    c.stored,
    c.reinjected + c.droppedExpired + c.discardedPoisoned + t.stored,
    "every stored copy is re-injected, expired, discarded or still held",
  );
}

describe("configuration", () => {
  test("defaults are valid and documented values", () => {
    validateFragConfig(DEFAULT_FRAG_CONFIG);
    assert.deepEqual(
      { ...DEFAULT_FRAG_CONFIG },
      {
        entries: 8192,
        extraBuckets: 1024,
        maxFragments: 256,
        maxFragmentBytes: 9216,
        ttlMs: 500,
      },
    );
    const t = table();
    assert.equal(t.capacity, 8192 + 1024);
    assert.equal(t.size, 0);
    assert.equal(t.stored, 0);
  });
  const bad: [Partial<FragTableConfig>, RegExp][] = [
    [{ entries: 0 }, /entries must be an integer in 1\.\.1048576, got 0/],
    [{ entries: 1.5 }, /entries/],
    [{ entries: Number.NaN }, /entries .* got NaN/],
    [{ entries: 1 << 21 }, /entries/],
    [{ extraBuckets: -1 }, /extraBuckets/],
    [{ maxFragments: -1 }, /maxFragments/],
    [{ maxFragmentBytes: 10 }, /maxFragmentBytes must be an integer in 68\.\.65535/],
    [{ maxFragmentBytes: 65536 }, /maxFragmentBytes/],
    [{ maxFragments: 1 << 20, maxFragmentBytes: 65535 }, /exceeds/],
    [{ ttlMs: 0 }, /ttlMs/],
    [{ ttlMs: -5 }, /ttlMs/],
    [{ ttlMs: Number.POSITIVE_INFINITY }, /ttlMs/],
    [{ ttlMs: 60_001 }, /ttlMs/],
    [{ ttlMs: "100" as unknown as number }, /ttlMs/],
  ];
  for (const [over, re] of bad) {
    test(`rejects ${JSON.stringify(over)}`, () => {
      assert.throws(
        () => validateFragConfig(cfg(over)),
        (e: unknown) => {
          assert.ok(e instanceof RangeError);
          assert.match(e.message, /^fragment table: /);
          assert.match(e.message, re);
          return true;
        },
      );
      assert.throws(() => new FragmentTable(cfg(over)), RangeError);
    });
  }
  test("zero extra buckets and zero fragment slots are allowed", () => {
    const t = table({ extraBuckets: 0, maxFragments: 0 });
    assert.equal(t.capacity, 8192);
    assert.equal(later(t, v4(1), bytes(100, 1), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedPoolFull, 1);
  });
});

describe("verdicts", () => {
  test("in order: first fragment, then later ones forwarded to its target, no copies", () => {
    const t = table();
    const f = v4(0x1111, 1, 1, 17, FragKind.First);
    assert.equal(first(t, f, 7, 0), 0);
    assert.equal(t.target, 7);
    for (let n = 0; n < 3; n++) {
      t.target = -1;
      assert.equal(later(t, v4(0x1111), bytes(1000, n), 1 + n), FragVerdict.Forward);
      assert.equal(t.target, 7);
    }
    assert.equal(t.size, 1);
    assert.equal(t.stored, 0);
    const c = t.counters;
    assert.equal(c.firstSeen, 1);
    assert.equal(c.forwarded, 3);
    assert.equal(c.stored, 0);
    checkIdentities(t);
  });

  test("out of order: last, middle stored; first makes both ready; exact bytes back in order", () => {
    const t = table();
    const last = bytes(500, 3);
    const middle = bytes(1480, 2);
    assert.equal(later(t, v4(42), last, 10), FragVerdict.Stored);
    assert.equal(later(t, v4(42), middle, 11), FragVerdict.Stored);
    assert.equal(t.stored, 2);
    assert.equal(t.ready, 0);
    assert.equal(t.size, 1);
    assert.equal(drain(t).length, 0, "nothing is ready before the first fragment");
    assert.equal(first(t, firstOf(v4(42)), 3, 12), 2);
    assert.equal(t.target, 3);
    assert.equal(t.ready, 2);
    const out = drain(t);
    assert.deepEqual(out, [last, middle]);
    assert.equal(t.stored, 0);
    assert.equal(t.ready, 0);
    // Re-injected, they pass the queue again and now find the target.
    for (const b of out) {
      t.target = -1;
      assert.equal(later(t, v4(42), b, 13), FragVerdict.Forward);
      assert.equal(t.target, 3);
    }
    const c = t.counters;
    assert.equal(c.stored, 2);
    assert.equal(c.reinjected, 2);
    assert.equal(c.forwarded, 2);
    checkIdentities(t);
  });

  test("a fragment stored at a buffer offset is copied from that offset", () => {
    const t = table();
    const buf = bytes(3000, 9);
    assert.equal(fragVerdict(t.later(v4(5), buf, 1000, 1200, 0)), FragVerdict.Stored);
    assert.equal(fragVerdict(t.later(v4(5), buf, 7, 20, 0)), FragVerdict.Stored); // short copy path
    buf.fill(0); // the daemon reuses its batch buffer
    t.first(firstOf(v4(5)), 1, 1);
    assert.deepEqual(drain(t), [bytes(3000, 9).slice(1000, 2200), bytes(3000, 9).slice(7, 27)]);
  });

  test("interleaved datagrams keep their own targets and their own stored fragments", () => {
    const t = table();
    const a = v4(100, 1);
    const b = v4(100, 2); // same id, another source
    const c6 = v6(100, 1);
    assert.equal(later(t, a, bytes(100, 1), 0), FragVerdict.Stored);
    assert.equal(later(t, b, bytes(100, 2), 0), FragVerdict.Stored);
    assert.equal(later(t, c6, bytes(100, 3), 0), FragVerdict.Stored);
    assert.equal(later(t, a, bytes(100, 4), 1), FragVerdict.Stored);
    assert.equal(t.size, 3);
    assert.equal(first(t, firstOf(b), 20, 2), 1);
    assert.deepEqual(drain(t), [bytes(100, 2)]);
    assert.equal(later(t, b, bytes(100, 5), 2), FragVerdict.Forward);
    assert.equal(t.target, 20);
    assert.equal(later(t, a, bytes(100, 6), 2), FragVerdict.Stored, "a still waits");
    assert.equal(first(t, firstOf(a), 10, 3), 3);
    assert.equal(first(t, firstOf(c6), 30, 3), 1);
    assert.deepEqual(drain(t), [bytes(100, 1), bytes(100, 4), bytes(100, 6), bytes(100, 3)]);
    assert.equal(later(t, a, bytes(1, 0), 4), FragVerdict.Forward);
    assert.equal(t.target, 10);
    assert.equal(later(t, c6, bytes(1, 0), 4), FragVerdict.Forward);
    assert.equal(t.target, 30);
    checkIdentities(t);
  });

  test("duplicate first fragment keeps the first target", () => {
    const t = table();
    assert.equal(first(t, v4(9, 1, 1, 17, FragKind.First), 5, 0), 0);
    assert.equal(first(t, v4(9, 1, 1, 17, FragKind.First), 8, 1), 0);
    assert.equal(t.target, 5, "the duplicate goes where the first one went");
    assert.equal(t.counters.firstDuplicate, 1);
    assert.equal(later(t, v4(9), bytes(10, 0), 2), FragVerdict.Forward);
    assert.equal(t.target, 5);
    // A first fragment handed to later() (the daemon wants the stored target) is forwarded.
    assert.equal(later(t, v4(9, 1, 1, 17, FragKind.First), bytes(10, 0), 2), FragVerdict.Forward);
    assert.equal(t.target, 5);
    assert.equal(t.size, 1);
  });
});

describe("outcomes", () => {
  test("first() and later() say what they did, one outcome per path", () => {
    const O = FragOutcome;
    const t = table({ entries: 1, extraBuckets: 2, maxFragments: 2, maxFragmentBytes: 100 });
    const seen: string[] = [];
    const note = (o: FragOutcome) => seen.push(FRAG_OUTCOME_NAMES[o]);
    note(t.later(v4(1), bytes(10, 1), 0, 10, 0)); // held: waits for its first
    note(t.first(firstOf(v4(1)), 4, 0)); // completes it, one fragment ready
    assert.equal(t.readied, 1);
    note(t.later(v4(1), bytes(10, 1), 0, 10, 0)); // forwarded
    assert.equal(t.target, 4);
    note(t.first(firstOf(v4(1)), 9, 0)); // duplicate keeps 4
    assert.equal(t.target, 4);
    assert.equal(t.readied, 0);
    note(t.first(firstOf(v4(2)), 5, 0)); // tracked
    note(t.later(v4(3), bytes(200, 1), 0, 200, 0)); // too big, poisons 3
    note(t.later(v4(3), bytes(10, 1), 0, 10, 0)); // poisoned
    note(t.first(firstOf(v4(3)), 6, 0)); // first of a poisoned datagram
    assert.equal(t.target, 6);
    note(t.later(v4(4), bytes(10, 1), 0, 10, 0)); // table full (3 entries)
    note(t.first(firstOf(v4(5)), 7, 0)); // untracked
    t.expire(TTL);
    const u = table({ maxFragments: 1 });
    u.later(v4(1), bytes(10, 1), 0, 10, 0);
    note(u.later(v4(2), bytes(10, 1), 0, 10, 0)); // pool full
    assert.deepEqual(seen, [
      "held",
      "first-completed",
      "forwarded",
      "first-duplicate",
      "first",
      "too-big",
      "poisoned",
      "first-poisoned",
      "table-full",
      "first-untracked",
      "pool-full",
    ]);
    for (const o of Object.values(O)) {
      const v = fragVerdict(o);
      if (o === O.Forwarded || o >= O.FirstTracked) assert.equal(v, FragVerdict.Forward);
      else if (o === O.Held) assert.equal(v, FragVerdict.Stored);
      else assert.equal(v, FragVerdict.Drop);
    }
  });
});

describe("keys", () => {
  test("IPv4 and IPv6 keys are distinct even with equal leading bytes and id", () => {
    const t = table();
    const a4 = v4(77);
    const a6 = v6(77);
    a6.src.set(a4.src.subarray(0, 4));
    a6.dst.set(a4.dst.subarray(0, 4));
    a6.src.fill(0, 4);
    a6.dst.fill(0, 4);
    t.first(firstOf(a4), 1, 0);
    assert.equal(later(t, a6, bytes(10, 0), 0), FragVerdict.Stored);
    t.first(firstOf(a6), 2, 0);
    assert.equal(later(t, a4, bytes(10, 0), 0), FragVerdict.Forward);
    assert.equal(t.target, 1);
    assert.equal(later(t, a6, bytes(10, 0), 0), FragVerdict.Forward);
    assert.equal(t.target, 2);
    assert.equal(t.size, 2);
  });

  test("same id, different source or destination or id: distinct datagrams", () => {
    const t = table();
    t.first(firstOf(v4(1, 1, 1)), 11, 0);
    t.first(firstOf(v6(1, 1, 1)), 12, 0);
    for (const other of [v4(1, 2, 1), v4(1, 1, 2), v4(2, 1, 1), v6(1, 2, 1), v6(1, 1, 2), v6(2)]) {
      assert.equal(later(t, other, bytes(10, 0), 0), FragVerdict.Stored);
    }
    assert.equal(t.size, 8);
  });

  test("IPv4 keys include the protocol; IPv6 keys do not", () => {
    const t = table();
    t.first(v4(3, 1, 1, 17, FragKind.First), 4, 0);
    assert.equal(later(t, v4(3, 1, 1, 6), bytes(10, 0), 0), FragVerdict.Stored);
    // IPv6: the later fragment reports the fragment header's next header (here 60, a
    // destination options header in the fragmentable part), not UDP.
    t.first(v6(3, 1, 1, 17, FragKind.First), 6, 0);
    assert.equal(later(t, v6(3, 1, 1, 60), bytes(10, 0), 0), FragVerdict.Forward);
    assert.equal(t.target, 6);
  });

  test("IPv4 ignores address bytes 4..15 (left over from an earlier IPv6 packet)", () => {
    const t = table();
    t.first(firstOf(v4(8)), 9, 0);
    const i = v4(8);
    i.src.fill(0xee, 4);
    i.dst.fill(0xdd, 4);
    assert.equal(later(t, i, bytes(10, 0), 0), FragVerdict.Forward);
    assert.equal(t.target, 9);
  });

  test("full 32-bit IPv6 ids and 16-bit IPv4 ids", () => {
    const t = table();
    t.first(firstOf(v6(0xffffffff)), 1, 0);
    assert.equal(later(t, v6(0xffffffff), bytes(1, 0), 0), FragVerdict.Forward);
    assert.equal(later(t, v6(0x7fffffff), bytes(1, 0), 0), FragVerdict.Stored);
    t.first(firstOf(v4(0xffff)), 2, 0);
    assert.equal(later(t, v4(0xffff), bytes(1, 0), 0), FragVerdict.Forward);
    assert.equal(later(t, v4(0x7fff), bytes(1, 0), 0), FragVerdict.Stored);
  });
});

describe("expiry (injected clock)", () => {
  test("stored fragments of a datagram whose first never came are dropped at TTL", () => {
    const t = table();
    later(t, v4(1), bytes(100, 1), 1000);
    later(t, v4(1), bytes(100, 2), 1000 + TTL - 1);
    assert.equal(t.expire(1000 + TTL - 1), 0, "alive until created + ttl");
    assert.equal(t.size, 1);
    assert.equal(t.expire(1000 + TTL), 1, "the lifetime counts from creation, not last use");
    assert.equal(t.size, 0);
    assert.equal(t.stored, 0);
    assert.equal(t.counters.expiredEntries, 1);
    assert.equal(t.counters.droppedExpired, 2);
    // Its first fragment, late, now makes a new entry with nothing to release.
    assert.equal(first(t, firstOf(v4(1)), 3, 1000 + TTL), 0);
    assert.deepEqual(drain(t), []);
    checkIdentities(t);
  });

  test("a known target is forgotten at TTL; first() and later() expire on their own", () => {
    const t = table();
    t.first(firstOf(v4(2)), 4, 0);
    assert.equal(later(t, v4(2), bytes(10, 0), TTL - 1), FragVerdict.Forward);
    // No expire() call: the lookup itself must not see the expired entry.
    assert.equal(later(t, v4(2), bytes(10, 0), TTL), FragVerdict.Stored);
    assert.equal(t.counters.expiredEntries, 1);
    assert.equal(t.counters.droppedExpired, 0, "a known entry holds no fragments");
    assert.equal(t.size, 1);
  });

  test("the table drains completely after the TTL with no traffic", () => {
    const t = table({ maxFragments: 4096 });
    let now = 5_000;
    for (let n = 0; n < 6000; n++) {
      now += 0.05;
      if (n % 3 === 0) t.first(firstOf(v4(n & 0xffff, n >> 16)), n % 5, now);
      else later(t, v6(n), bytes(60, n), now);
      if (n % 7 === 0) later(t, v6(n - 1), bytes(60, n), now);
    }
    const live = t.size;
    assert.ok(live >= 6000, `${live} entries`);
    assert.ok(t.stored > 3000);
    const early = t.expire(now + TTL - 1);
    assert.ok(early > 0 && early < live, "only the entries older than the TTL go");
    t.expire(now + TTL);
    assert.equal(t.size, 0);
    assert.equal(t.stored, 0);
    assert.equal(t.counters.expiredEntries, live);
    checkIdentities(t);
    // The freed entries and slots are all usable again.
    for (let n = 0; n < t.capacity; n++) t.first(firstOf(v6(n, 7)), 1, now + TTL + 1);
    assert.equal(t.size, t.capacity);
  });

  test("hours of simulated time in steady traffic stay bounded", () => {
    const t = table({ entries: 256, extraBuckets: 64, maxFragments: 32, ttlMs: 200 });
    const i = v4(0);
    const f = firstOf(i);
    const b1 = bytes(200, 1);
    const b2 = bytes(200, 2);
    let id = 0;
    for (let now = 0; now < 3 * 3600_000; now += 10) {
      // 1 datagram per 10 ms, first fragment last: 2 stored, then released.
      id++;
      i.fragId = f.fragId = id & 0xffff;
      i.src[3] = f.src[3] = (id >> 16) & 0xff;
      later(t, i, b1, now);
      later(t, i, b2, now);
      assert.equal(first(t, f, 1, now), 2);
      assert.equal(
        t.drainReady(() => {}),
        2,
      );
      if (now % 1000 === 0) t.expire(now);
    }
    assert.ok(t.size <= 21, `${t.size} entries live at 1 per 10 ms with a 200 ms TTL`);
    assert.equal(t.stored, 0);
    assert.equal(t.counters.droppedTableFull, 0);
    checkIdentities(t);
  });

  test("a clock that goes back (or NaN) does not break the table", () => {
    const t = table({ ttlMs: 100 });
    later(t, v4(1), bytes(10, 0), 1000);
    later(t, v4(2), bytes(10, 0), 900); // taken as 1000
    later(t, v4(3), bytes(10, 0), Number.NaN); // taken as 1000
    assert.equal(t.expire(1099), 0);
    assert.equal(t.expire(1100), 3);
    assert.equal(t.size, 0);
  });
});

describe("poisoning and bounds", () => {
  test("pool full poisons the datagram; its further fragments and first are dropped", () => {
    const t = table({ maxFragments: 2 });
    const a = v4(1, 1);
    const b = v4(1, 2);
    assert.equal(later(t, a, bytes(10, 1), 0), FragVerdict.Stored);
    assert.equal(later(t, a, bytes(10, 2), 0), FragVerdict.Stored);
    assert.equal(later(t, b, bytes(10, 3), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedPoolFull, 1);
    assert.equal(t.counters.poisoned, 1);
    assert.equal(later(t, b, bytes(10, 4), 1), FragVerdict.Drop);
    assert.equal(t.counters.droppedPoisoned, 1);
    assert.equal(t.lastPoisoned, true);
    assert.equal(first(t, firstOf(b), 5, 1), 0);
    assert.equal(t.counters.firstPoisoned, 1);
    assert.equal(t.lastPoisoned, true);
    assert.equal(later(t, b, bytes(10, 4), 1), FragVerdict.Drop, "still poisoned after first()");
    // a is untouched.
    assert.equal(first(t, firstOf(a), 6, 2), 2);
    assert.equal(t.lastPoisoned, false);
    assert.deepEqual(drain(t), [bytes(10, 1), bytes(10, 2)]);
    // The poison lasts until the entry expires; then the key is new again.
    t.expire(TTL);
    assert.equal(t.size, 0);
    assert.equal(later(t, b, bytes(10, 4), TTL), FragVerdict.Stored);
    checkIdentities(t);
  });

  test("a drop frees the poisoned datagram's stored fragments", () => {
    const t = table({ maxFragments: 2 });
    const a = v6(1);
    later(t, a, bytes(10, 1), 0);
    later(t, a, bytes(10, 2), 0);
    assert.equal(later(t, a, bytes(10, 3), 0), FragVerdict.Drop);
    assert.equal(t.stored, 0);
    assert.equal(t.counters.discardedPoisoned, 2);
    assert.equal(first(t, firstOf(a), 1, 1), 0, "nothing to re-inject");
    assert.equal(t.ready, 0);
    // The freed slots serve another datagram.
    assert.equal(later(t, v6(2), bytes(10, 4), 1), FragVerdict.Stored);
    checkIdentities(t);
  });

  test("too big: dropped, counted, poisons", () => {
    const t = table({ maxFragmentBytes: 100 });
    assert.equal(later(t, v4(1), bytes(100, 1), 0), FragVerdict.Stored);
    assert.equal(later(t, v4(1), bytes(101, 2), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedTooBig, 1);
    assert.equal(t.counters.poisoned, 1);
    assert.equal(t.counters.discardedPoisoned, 1);
    assert.equal(t.stored, 0);
    assert.equal(later(t, v4(1), bytes(10, 3), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedPoisoned, 1);
    // A too-big first-seen fragment creates a poisoned entry.
    assert.equal(later(t, v4(2), bytes(5000, 4), 0), FragVerdict.Drop);
    assert.equal(later(t, v4(2), bytes(10, 5), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedPoisoned, 2);
    // Bounds outside the buffer are a caller bug: counted as too big, never thrown.
    const buf = bytes(50, 0);
    assert.equal(fragVerdict(t.later(v4(3), buf, 40, 20, 0)), FragVerdict.Drop);
    assert.equal(fragVerdict(t.later(v4(4), buf, -1, 10, 0)), FragVerdict.Drop);
    assert.equal(fragVerdict(t.later(v4(5), buf, 0, Number.NaN, 0)), FragVerdict.Drop);
    assert.equal(t.counters.droppedTooBig, 5);
    checkIdentities(t);
  });

  test("a known target needs no copy: a too-big fragment is forwarded", () => {
    const t = table({ maxFragmentBytes: 100 });
    t.first(firstOf(v4(1)), 2, 0);
    assert.equal(later(t, v4(1), bytes(9000, 1), 0), FragVerdict.Forward);
  });

  test("table full: new datagrams dropped, first() untracked, existing ones unaffected", () => {
    const t = table({ entries: 1, extraBuckets: 1 });
    assert.equal(later(t, v4(1), bytes(10, 1), 0), FragVerdict.Stored);
    t.first(firstOf(v4(2)), 5, 0);
    assert.equal(t.size, 2);
    assert.equal(later(t, v4(3), bytes(10, 2), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedTableFull, 1);
    assert.equal(t.counters.poisoned, 0, "no entry to poison");
    assert.equal(first(t, firstOf(v4(4)), 9, 0), 0);
    assert.equal(t.target, 9, "the first fragment still goes where the daemon chose");
    assert.equal(t.counters.firstUntracked, 1);
    assert.equal(later(t, v4(2), bytes(10, 0), 0), FragVerdict.Forward);
    assert.equal(first(t, firstOf(v4(1)), 6, 0), 1);
    assert.equal(t.size, 2);
    t.expire(TTL);
    assert.equal(later(t, v4(3), bytes(10, 2), TTL), FragVerdict.Stored, "room again");
    checkIdentities(t);
  });

  test(`a hash chain holds at most MAX_CHAIN (${MAX_CHAIN}) entries`, () => {
    const t = table({ entries: 1, extraBuckets: 100 });
    for (let n = 0; n < MAX_CHAIN; n++) {
      assert.equal(later(t, v4(n), bytes(10, n), 0), FragVerdict.Stored);
    }
    assert.equal(later(t, v4(MAX_CHAIN), bytes(10, 0), 0), FragVerdict.Drop);
    assert.equal(t.counters.droppedTableFull, 1);
    assert.equal(t.size, MAX_CHAIN);
    // Entries deep in the chain are still found.
    assert.equal(first(t, firstOf(v4(0)), 1, 0), 1);
    assert.equal(first(t, firstOf(v4(MAX_CHAIN - 1)), 1, 0), 1);
  });

  test("drainReady: at most `max`, oldest first; a throwing callback still frees the slot", () => {
    const t = table();
    for (let n = 0; n < 5; n++) later(t, v4(1), bytes(10, n), 0);
    t.first(firstOf(v4(1)), 1, 0);
    const seen: number[] = [];
    assert.equal(
      t.drainReady((b, o) => seen.push(b[o]), 2),
      2,
    );
    assert.deepEqual(seen, [bytes(10, 0)[0], bytes(10, 1)[0]]);
    assert.equal(t.ready, 3);
    assert.throws(() =>
      t.drainReady(() => {
        throw new Error("tun write failed");
      }),
    );
    assert.equal(t.ready, 2);
    assert.equal(t.stored, 2, "the slot handed to the throwing callback is free");
    assert.equal(
      t.drainReady(() => {}),
      2,
    );
    assert.equal(t.stored, 0);
    checkIdentities(t);
  });
});

describe("real fragments through classify()", () => {
  function packets(name: string): Uint8Array[] {
    const out: Uint8Array[] = [];
    // Plain Uint8Array copies (the reader returns Buffer views), comparable with deepEqual.
    for (const p of readPcap(readFileSync(join(FIXTURES, name)))) {
      if (p.ip) out.push(new Uint8Array(p.ip));
    }
    return out;
  }
  for (const file of ["frag-udp-v4.pcap", "frag-udp-v6.pcap"]) {
    test(`${file}: later fragments first, re-injected byte for byte after the first`, () => {
      const pkts = packets(file);
      assert.equal(pkts.length, 4);
      const t = table();
      const info = new PacketInfo();
      // One buffer, as an NFQUEUE batch: the packets back to back, arriving 3, 2, 1, 0.
      const order = [3, 2, 1, 0];
      const batch = new Uint8Array(pkts.reduce((n, p) => n + p.length, 0) + 7);
      const at: number[] = [];
      let pos = 7;
      for (const k of order) {
        batch.set(pkts[k], pos);
        at.push(pos);
        pos += pkts[k].length;
      }
      let now = 100;
      for (let j = 0; j < 3; j++) {
        const p = pkts[order[j]];
        assert.equal(classify(batch, at[j], p.length, defaultClassifyOptions, info), 0);
        assert.equal(info.fragKind, FragKind.Later);
        assert.equal(fragVerdict(t.later(info, batch, at[j], p.length, now++)), FragVerdict.Stored);
      }
      assert.equal(classify(batch, at[3], pkts[0].length, defaultClassifyOptions, info), 0);
      assert.equal(info.fragKind, FragKind.First);
      assert.equal(info.dport, 5300);
      batch.fill(0, 0, at[3]); // the batch buffer is reused; the copies must not care
      assert.equal(first(t, info, 2, now++), 3);
      assert.equal(t.target, 2);
      const back = drain(t);
      assert.deepEqual(back, [pkts[3], pkts[2], pkts[1]]);
      // The re-injected packets come through the queue again and are forwarded.
      for (const p of back) {
        assert.equal(classify(p, 0, p.length, defaultClassifyOptions, info), 0);
        t.target = -1;
        assert.equal(fragVerdict(t.later(info, p, 0, p.length, now++)), FragVerdict.Forward);
        assert.equal(t.target, 2);
      }
      assert.equal(t.size, 1);
      assert.equal(t.stored, 0);
      checkIdentities(t);
    });
  }
});

/** xorshift32: reproducible pseudo-random numbers. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function fuzz(
  config: FragTableConfig,
  calls: number,
  keySpace: number,
  seed: number,
): {
  t: FragmentTable;
  maxSize: number;
  maxStored: number;
  verdicts: number[];
  outcomes: number[];
  firsts: number;
} {
  const t = new FragmentTable(config, seed);
  const rand = rng(seed);
  const infos: PacketInfo[] = [];
  for (let n = 0; n < keySpace; n++) {
    const r = rand();
    const i = (r & 1) === 0 ? v4(r >>> 16, (r >>> 8) & 3, 1, r & 2 ? 17 : 6) : v6(r >>> 4, 1, 1);
    infos.push(i);
  }
  const maxLen = config.maxFragmentBytes + 64;
  const buf = new Uint8Array(maxLen + 16);
  const verdicts = [0, 0, 0];
  const outcomes = new Array<number>(FRAG_OUTCOME_NAMES.length).fill(0);
  let firsts = 0;
  let maxSize = 0;
  let maxStored = 0;
  let now = 0;
  let drained = 0;
  const check = (b: Uint8Array, off: number, len: number): void => {
    // Every copy was tagged with its length: a mixed-up slot or length shows here.
    assert.ok(len >= 4 && len <= config.maxFragmentBytes);
    const tag = (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3];
    assert.equal(tag, len);
    assert.equal(b[off + len - 1], len & 0xff);
    drained++;
  };
  for (let n = 0; n < calls; n++) {
    const r = rand();
    now += (r & 3) * 0.05; // 0..0.15 ms per packet: ~13k packets/s
    const info = infos[(r >>> 2) % keySpace];
    const op = (r >>> 24) & 15;
    if (op === 0 || op === 1) {
      info.fragKind = FragKind.First;
      outcomes[t.first(info, (r >>> 8) & 0xffff, now)]++;
      firsts++;
    } else {
      info.fragKind = FragKind.Later;
      // Mostly MTU-sized and smaller, sometimes too big.
      const len = 4 + (rand() % (maxLen - 4));
      const off = r & 15;
      buf[off] = len >>> 24;
      buf[off + 1] = (len >>> 16) & 0xff;
      buf[off + 2] = (len >>> 8) & 0xff;
      buf[off + 3] = len & 0xff;
      buf[off + len - 1] = len & 0xff;
      const outcome = t.later(info, buf, off, len, now);
      outcomes[outcome]++;
      verdicts[fragVerdict(outcome)]++;
    }
    if (op === 2) t.drainReady(check);
    if ((n & 1023) === 0) t.expire(now);
    const size = t.size;
    const stored = t.stored;
    if (size > maxSize) maxSize = size;
    if (stored > maxStored) maxStored = stored;
    if (size > t.capacity || stored > config.maxFragments || t.ready > stored) {
      assert.fail(`bounds broken at call ${n}: size ${size} stored ${stored} ready ${t.ready}`);
    }
  }
  t.drainReady(check);
  assert.equal(drained, t.counters.reinjected);
  return { t, maxSize, maxStored, verdicts, outcomes, firsts };
}

describe("fuzz: 1,000,000 random fragments", () => {
  test("small table under pressure: bounds hold after every call, counters add up", (ctx) => {
    const config = cfg({
      entries: 64,
      extraBuckets: 16,
      maxFragments: 48,
      maxFragmentBytes: 1500,
      ttlMs: 50,
    });
    const calls = 1_000_000;
    const { t, maxSize, maxStored, verdicts, outcomes, firsts } = fuzz(
      config,
      calls,
      400,
      FUZZ_SEED,
    );
    const c = t.counters;
    // Each outcome is the one counter the call moved.
    const O = FragOutcome;
    assert.deepEqual(
      [
        outcomes[O.Forwarded],
        outcomes[O.Held],
        outcomes[O.DroppedPoolFull],
        outcomes[O.DroppedTooBig],
        outcomes[O.DroppedTableFull],
        outcomes[O.DroppedPoisoned],
        outcomes[O.FirstDuplicate],
        outcomes[O.FirstPoisoned],
        outcomes[O.FirstUntracked],
      ],
      [
        c.forwarded,
        c.stored,
        c.droppedPoolFull,
        c.droppedTooBig,
        c.droppedTableFull,
        c.droppedPoisoned,
        c.firstDuplicate,
        c.firstPoisoned,
        c.firstUntracked,
      ],
    );
    assert.ok(outcomes[O.FirstTracked] > 0 && outcomes[O.FirstCompleted] > 0);
    assert.equal(c.firstSeen, firsts);
    assert.equal(c.laterSeen, calls - firsts);
    assert.equal(c.forwarded, verdicts[FragVerdict.Forward]);
    assert.equal(c.stored, verdicts[FragVerdict.Stored]);
    assert.equal(
      c.droppedPoolFull + c.droppedTooBig + c.droppedTableFull + c.droppedPoisoned,
      verdicts[FragVerdict.Drop],
    );
    checkIdentities(t);
    // The fuzz reaches every path.
    for (const [k, v] of Object.entries(c)) assert.ok(v > 0, `counter ${k} never moved`);
    assert.equal(maxSize, t.capacity, "the table was filled");
    assert.equal(maxStored, config.maxFragments, "the pool was filled");
    // No traffic for a TTL: everything goes.
    const now = 1e12;
    t.expire(now);
    t.drainReady(() => {});
    assert.equal(t.size, 0);
    assert.equal(t.stored, 0);
    checkIdentities(t);
    ctx.diagnostic(`fuzz small: ${JSON.stringify(c)} maxSize ${maxSize} maxStored ${maxStored}`);
  });

  test("default sizes, many keys: bounds hold, counters add up", (ctx) => {
    const config = cfg({ maxFragmentBytes: 2000 });
    const calls = 1_000_000;
    const { t, maxSize, maxStored, verdicts } = fuzz(config, calls, 50_000, FUZZ_SEED ^ 0x5555);
    assert.ok(maxSize <= t.capacity);
    assert.ok(maxStored <= config.maxFragments);
    assert.equal(t.counters.forwarded, verdicts[FragVerdict.Forward]);
    checkIdentities(t);
    t.expire(1e12);
    t.drainReady(() => {});
    assert.equal(t.size, 0);
    assert.equal(t.stored, 0);
    checkIdentities(t);
    ctx.diagnostic(
      `fuzz default: ${JSON.stringify(t.counters)} maxSize ${maxSize} maxStored ${maxStored}`,
    );
  });
});

describe("fuzz: datagrams in random order against an oracle", () => {
  test("200,000 fragments, 64 datagrams interleaved: every fragment reaches its target", (ctx) => {
    const t = new FragmentTable(cfg({ maxFragments: 1024 }), FUZZ_SEED);
    const rand = rng(FUZZ_SEED ^ 0xa5a5);
    const K = 64;
    interface Dg {
      serial: number;
      info: PacketInfo;
      first: PacketInfo;
      target: number;
      order: number[];
      pos: number;
    }
    let serial = 0;
    const fresh = (): Dg => {
      serial++;
      const six = (serial & 1) === 1;
      const info = six ? v6(serial * 7919, serial & 0xff, 1) : v4(serial & 0xffff, serial >> 16);
      const n = 2 + (rand() % 6); // fragments, the first one included
      const order = Array.from({ length: n }, (_, k) => k);
      for (let k = n - 1; k > 0; k--) {
        const j = rand() % (k + 1);
        [order[k], order[j]] = [order[j], order[k]];
      }
      return { serial, info, first: firstOf(info), target: rand() % 65535, order, pos: 0 };
    };
    const bySerial = new Map<number, Dg>();
    const active: Dg[] = [];
    for (let k = 0; k < K; k++) {
      const d = fresh();
      active.push(d);
      bySerial.set(d.serial, d);
    }
    const tun: Uint8Array[] = []; // re-injected copies on their way back to the queue
    let sent = 0;
    let delivered = 0;
    let now = 0;
    const frag = (d: Dg, k: number): Uint8Array => {
      const b = bytes(9 + (rand() % 1490), d.serial + k);
      b[0] = d.serial >>> 24;
      b[1] = (d.serial >>> 16) & 0xff;
      b[2] = (d.serial >>> 8) & 0xff;
      b[3] = d.serial & 0xff;
      b[4] = k;
      return b;
    };
    const forwardedTo = (d: Dg): void => {
      assert.equal(t.target, d.target, `datagram ${d.serial} split`);
      delivered++;
    };
    while (sent < 200_000) {
      now += 0.05;
      if (tun.length > 0 && rand() % 2 === 0) {
        const b = tun.shift() as Uint8Array;
        const d = bySerial.get(((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0) as Dg;
        assert.equal(later(t, d.info, b, now), FragVerdict.Forward);
        forwardedTo(d);
        continue;
      }
      const slot = rand() % K;
      const d = active[slot];
      const k = d.order[d.pos++];
      sent++;
      if (k === 0) {
        const ready = first(t, d.first, d.target, now);
        assert.equal(t.target, d.target);
        assert.equal(
          t.drainReady((b, o, l) => tun.push(b.slice(o, o + l))),
          ready,
        );
      } else {
        const v = later(t, d.info, frag(d, k), now);
        assert.notEqual(v, FragVerdict.Drop);
        if (v === FragVerdict.Forward) forwardedTo(d);
      }
      if (d.pos === d.order.length) {
        const n = fresh();
        active[slot] = n;
        bySerial.set(n.serial, n);
      }
    }
    // Finish the open datagrams and flush the TUN.
    for (const d of active) {
      while (d.pos < d.order.length) {
        const k = d.order[d.pos++];
        sent++;
        if (k === 0) {
          t.first(d.first, d.target, now);
          t.drainReady((b, o, l) => tun.push(b.slice(o, o + l)));
        } else if (later(t, d.info, frag(d, k), now) === FragVerdict.Forward) forwardedTo(d);
      }
    }
    for (const b of tun) {
      const d = bySerial.get(((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0) as Dg;
      assert.equal(later(t, d.info, b, now), FragVerdict.Forward);
      forwardedTo(d);
    }
    const c = t.counters;
    assert.equal(
      delivered + c.firstSeen,
      sent,
      "every fragment delivered to its datagram's target",
    );
    assert.equal(c.reinjected, c.stored);
    assert.equal(t.stored, 0);
    assert.equal(c.droppedPoolFull + c.droppedTooBig + c.droppedTableFull + c.droppedPoisoned, 0);
    assert.ok(c.stored > 50_000, `${c.stored} stored: the order was really random`);
    checkIdentities(t);
    ctx.diagnostic(`oracle fuzz: ${sent} fragments, ${serial} datagrams, ${JSON.stringify(c)}`);
  });
});
