import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { test } from "node:test";
import {
  buildMaglevTable,
  DEFAULT_TABLE_SIZE,
  isPrime,
  MAX_TABLE_SIZE,
  type MaglevTarget,
  MIN_TABLE_SIZE,
  maglevLookup,
  maglevPermutation,
  normalizeTableSize,
  tableShares,
} from "../../src/maglev/maglev.js";
import { schedulePeriod, weightedTurns } from "../../src/maglev/schedule.js";

// Deterministic PRNG (mulberry32) so every run checks the same "random" target sets.
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integer in [lo, hi]. */
function randInt(rnd: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rnd() * (hi - lo + 1));
}

/** n targets with distinct random fwmarks in 1..0xffffffff and weights in [wmin, wmax]. */
function randomTargets(rnd: () => number, n: number, wmin: number, wmax: number): MaglevTarget[] {
  const marks = new Set<number>();
  while (marks.size < n) marks.add(randInt(rnd, 1, 0xffffffff));
  return [...marks].map((fwmark) => ({ fwmark, weight: randInt(rnd, wmin, wmax) }));
}

function shuffled<T>(rnd: () => number, items: readonly T[]): T[] {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = randInt(rnd, 0, i);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function digest(table: Uint32Array): string {
  return createHash("sha256")
    .update(new Uint8Array(table.buffer, table.byteOffset, table.byteLength))
    .digest("hex");
}

function changedEntries(a: Uint32Array, b: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

const PRIMES = [3, 5, 7, 13, 97, 251, 997, 4093, 10007, 65537];

test("every entry is filled, by a target with weight > 0, when at least one has weight > 0", () => {
  const rnd = prng(1);
  for (let round = 0; round < 60; round++) {
    const size = PRIMES[randInt(rnd, 0, PRIMES.length - 1)];
    const targets = randomTargets(rnd, randInt(rnd, 1, 60), 0, 10);
    if (targets.every((t) => t.weight === 0)) targets[0] = { ...targets[0], weight: 1 };
    const live = new Set(targets.filter((t) => t.weight > 0).map((t) => t.fwmark));
    const table = buildMaglevTable(targets, size);
    assert.equal(table.length, size);
    for (const m of table) assert.ok(live.has(m), `entry ${m} is not a live target`);
  }
});

test("the table is all 0 when no target has weight > 0", () => {
  const size = 997;
  assert.ok(buildMaglevTable([], size).every((m) => m === 0));
  const out = buildMaglevTable([{ fwmark: 7, weight: 3 }], size);
  assert.ok(out.every((m) => m === 7));
  const idle = [
    { fwmark: 7, weight: 0 },
    { fwmark: 8, weight: 0 },
  ];
  // A reused table must be cleared, not keep the previous owners.
  assert.equal(buildMaglevTable(idle, size, out), out);
  assert.ok(out.every((m) => m === 0));
});

test("balance at M=65537, N=100 equal weights: max/min entries per target <= 1.02", (t) => {
  const rnd = prng(2);
  let worst = 0;
  for (let round = 0; round < 5; round++) {
    const targets = randomTargets(rnd, 100, 1, 1);
    const shares = [...tableShares(buildMaglevTable(targets, DEFAULT_TABLE_SIZE)).values()];
    assert.equal(shares.length, 100);
    const ratio = Math.max(...shares) / Math.min(...shares);
    worst = Math.max(worst, ratio);
    assert.ok(ratio <= 1.02, `max/min ${ratio}`);
  }
  t.diagnostic(`worst max/min entries per target: ${worst.toFixed(5)}`);
});

test("weighted shares are within 1% of the table of the weight fraction", (t) => {
  const rnd = prng(3);
  let worst = 0;
  for (let round = 0; round < 30; round++) {
    const size = round % 3 === 0 ? 10007 : DEFAULT_TABLE_SIZE;
    const targets = randomTargets(rnd, randInt(rnd, 2, 50), 1, 10);
    const total = targets.reduce((sum, x) => sum + x.weight, 0);
    const shares = tableShares(buildMaglevTable(targets, size));
    for (const { fwmark, weight } of targets) {
      const deviation = Math.abs((shares.get(fwmark) ?? 0) / size - weight / total);
      worst = Math.max(worst, deviation);
      assert.ok(
        deviation <= 0.01,
        `fwmark ${fwmark} weight ${weight}/${total}: off by ${deviation}`,
      );
    }
  }
  t.diagnostic(`worst share deviation: ${(worst * 100).toFixed(4)}% of the table`);
});

test("extreme weights still give proportional shares", () => {
  const targets = [
    { fwmark: 1, weight: 65535 },
    { fwmark: 2, weight: 1 },
    { fwmark: 3, weight: 300 },
  ];
  const size = DEFAULT_TABLE_SIZE;
  const shares = tableShares(buildMaglevTable(targets, size));
  for (const { fwmark, weight } of targets) {
    const expected = (weight / 65836) * size;
    assert.ok(Math.abs((shares.get(fwmark) ?? 0) - expected) <= 1.5, `fwmark ${fwmark}`);
  }
});

test("scaling all weights leaves the table unchanged", () => {
  const rnd = prng(4);
  for (let round = 0; round < 10; round++) {
    const targets = randomTargets(rnd, randInt(rnd, 1, 30), 1, 10);
    const factor = randInt(rnd, 2, 50);
    const scaled = targets.map((x) => ({ fwmark: x.fwmark, weight: x.weight * factor }));
    assert.deepEqual(buildMaglevTable(scaled, 4093), buildMaglevTable(targets, 4093));
  }
});

test("removing 1 of 100 targets at M=65537 moves at most 1.7% of entries; adding it back restores the table", (t) => {
  const rnd = prng(5);
  const size = DEFAULT_TABLE_SIZE;
  const moved: number[] = [];
  for (let round = 0; round < 5; round++) {
    const targets = randomTargets(rnd, 100, 1, 1);
    const before = buildMaglevTable(targets, size);
    for (let k = 0; k < 3; k++) {
      const gone = randInt(rnd, 0, targets.length - 1);
      const rest = targets.filter((_, i) => i !== gone);
      const after = buildMaglevTable(rest, size);
      const fraction = changedEntries(before, after) / size;
      moved.push(fraction);
      assert.ok(fraction <= 0.017, `moved ${(fraction * 100).toFixed(3)}%`);
      // Back in, at another position of the list: the exact original table.
      assert.deepEqual(buildMaglevTable([targets[gone], ...rest], size), before);
    }
  }
  const mean = moved.reduce((a, b) => a + b, 0) / moved.length;
  t.diagnostic(
    `entries moved removing 1 of 100: mean ${(mean * 100).toFixed(3)}%, max ${(Math.max(...moved) * 100).toFixed(3)}% (1% is the floor)`,
  );
});

test("the table depends only on the set of targets, not their order", () => {
  const rnd = prng(6);
  for (let round = 0; round < 10; round++) {
    const targets = randomTargets(rnd, randInt(rnd, 1, 40), 0, 5);
    const size = PRIMES[randInt(rnd, 0, PRIMES.length - 1)];
    assert.deepEqual(
      buildMaglevTable(shuffled(rnd, targets), size),
      buildMaglevTable(targets, size),
    );
  }
});

test("two processes given the same targets in different orders build identical tables", () => {
  const rnd = prng(7);
  const targets = randomTargets(rnd, 100, 1, 10);
  const moduleUrl = new URL("../../src/maglev/maglev.js", import.meta.url).href;
  const digestIn = (order: MaglevTarget[]): string => {
    const script = [
      `import { createHash } from "node:crypto";`,
      `import { buildMaglevTable } from ${JSON.stringify(moduleUrl)};`,
      `const table = buildMaglevTable(${JSON.stringify(order)}, ${DEFAULT_TABLE_SIZE});`,
      `process.stdout.write(createHash("sha256").update(new Uint8Array(table.buffer)).digest("hex"));`,
    ].join("\n");
    return execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      encoding: "utf8",
    });
  };
  const first = digestIn(targets);
  const second = digestIn(shuffled(rnd, targets).reverse());
  assert.match(first, /^[0-9a-f]{64}$/);
  assert.equal(second, first);
  assert.equal(digest(buildMaglevTable(targets, DEFAULT_TABLE_SIZE)), first);
});

test("normalizeTableSize keeps primes, lowers other sizes to a prime, rejects out of range", () => {
  assert.deepEqual(normalizeTableSize(65537), { size: 65537 });
  const lowered = normalizeTableSize(65536);
  assert.equal(lowered.size, 65521);
  assert.match(lowered.message ?? "", /65536.*not prime.*65521/);
  assert.deepEqual(normalizeTableSize(MAX_TABLE_SIZE), { size: 1_000_003 });
  assert.deepEqual(normalizeTableSize(MIN_TABLE_SIZE), { size: 3 });
  assert.equal(normalizeTableSize(4).size, 3);
  assert.equal(normalizeTableSize(1_000_002).size, 999_983);
  for (const bad of [2, 0, -5, 1_000_004, 2_000_000, 65537.5, Number.NaN, Infinity]) {
    assert.throws(() => normalizeTableSize(bad), RangeError, `size ${bad}`);
  }
});

test("isPrime", () => {
  const small = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47];
  for (let n = -2; n < 50; n++) assert.equal(isPrime(n), small.includes(n), `${n}`);
  assert.ok(isPrime(65537));
  assert.ok(isPrime(65521));
  assert.ok(isPrime(1_000_003));
  assert.ok(!isPrime(65536));
  assert.ok(!isPrime(1_000_001)); // 101 × 9901
  assert.ok(!isPrime(2.5));
});

test("buildMaglevTable rejects a table size that is not a prime in range", () => {
  const targets = [{ fwmark: 1, weight: 1 }];
  for (const bad of [2, 4, 65536, 1_000_033, 97.5, Number.NaN]) {
    assert.throws(() => buildMaglevTable(targets, bad), RangeError, `size ${bad}`);
  }
  assert.equal(buildMaglevTable(targets, MAX_TABLE_SIZE).length, MAX_TABLE_SIZE);
});

test("bad targets throw RangeError and leave a reused table untouched", () => {
  const out = buildMaglevTable([{ fwmark: 9, weight: 1 }], 97);
  const bad: MaglevTarget[][] = [
    [
      { fwmark: 5, weight: 1 },
      { fwmark: 5, weight: 2 },
    ],
    [
      { fwmark: 5, weight: 0 },
      { fwmark: 5, weight: 0 },
    ],
    [{ fwmark: 0, weight: 1 }],
    [{ fwmark: 2 ** 32, weight: 1 }],
    [{ fwmark: -1, weight: 1 }],
    [{ fwmark: 1.5, weight: 1 }],
    [{ fwmark: Number.NaN, weight: 1 }],
    [{ fwmark: 1, weight: -1 }],
    [{ fwmark: 1, weight: 1.5 }],
    [{ fwmark: 1, weight: 65536 }],
    [{ fwmark: 1, weight: Number.NaN }],
  ];
  for (const targets of bad) {
    assert.throws(() => buildMaglevTable(targets, 97, out), RangeError, JSON.stringify(targets));
  }
  assert.ok(out.every((m) => m === 9));
  // The edges of the valid ranges are accepted.
  const edges = [
    { fwmark: 1, weight: 65535 },
    { fwmark: 0xffffffff, weight: 65535 },
  ];
  assert.deepEqual([...tableShares(buildMaglevTable(edges, 97)).keys()], [1, 0xffffffff]);
});

test("buildMaglevTable reuses `out` only when its length is the table size", () => {
  const targets = [{ fwmark: 3, weight: 1 }];
  const out = new Uint32Array(97);
  assert.equal(buildMaglevTable(targets, 97, out), out);
  const other = buildMaglevTable(targets, 101, out);
  assert.notEqual(other, out);
  assert.equal(other.length, 101);
});

test("lookup maps every 32-bit hash inside the table, as (hash * M) >> 32", () => {
  const size = 65537;
  const table = new Uint32Array(size);
  for (let i = 0; i < size; i++) table[i] = i + 1;
  assert.equal(maglevLookup(table, 0), 1);
  assert.equal(maglevLookup(table, 0xffffffff), size);
  assert.equal(maglevLookup(table, 0x80000000), Math.floor(size / 2) + 1);
  // A hash that went through signed 32-bit arithmetic means the same unsigned value.
  assert.equal(maglevLookup(table, -1), size);
  const rnd = prng(8);
  for (let k = 0; k < 1000; k++) {
    const hash = randInt(rnd, 0, 0xffffffff);
    assert.equal(maglevLookup(table, hash), Math.floor((hash * size) / 2 ** 32) + 1);
  }
  const built = buildMaglevTable(randomTargets(rnd, 10, 1, 3), 13);
  assert.equal(maglevLookup(built, 0), built[0]);
  assert.equal(maglevLookup(built, 0xffffffff), built[12]);
  assert.equal(maglevLookup(buildMaglevTable([], 13), 12345), 0);
});

test("permutation parameters depend only on fwmark and M, and stay in range", () => {
  const rnd = prng(9);
  for (let k = 0; k < 2000; k++) {
    const fwmark = randInt(rnd, 1, 0xffffffff);
    const size = PRIMES[randInt(rnd, 0, PRIMES.length - 1)];
    const p = maglevPermutation(fwmark, size);
    assert.ok(Number.isInteger(p.offset) && p.offset >= 0 && p.offset < size, `offset ${p.offset}`);
    assert.ok(Number.isInteger(p.skip) && p.skip >= 1 && p.skip <= size - 1, `skip ${p.skip}`);
    assert.deepEqual(maglevPermutation(fwmark, size), p);
  }
  // Different fwmarks get different permutations (not a property of every pair, but of these).
  assert.notDeepEqual(maglevPermutation(1, 65537), maglevPermutation(2, 65537));
});

test("tableShares counts every owned entry, in fwmark order", () => {
  const targets = randomTargets(prng(10), 20, 1, 4);
  const shares = tableShares(buildMaglevTable(targets, 4093));
  const keys = [...shares.keys()];
  assert.deepEqual(
    keys,
    targets.map((x) => x.fwmark).sort((a, b) => a - b),
  );
  assert.equal(
    [...shares.values()].reduce((a, b) => a + b, 0),
    4093,
  );
  assert.equal(tableShares(new Uint32Array(5)).size, 0);
});

test("the weighted schedule is round robin for equal weights and proportional otherwise", () => {
  assert.deepEqual([...weightedTurns(Uint32Array.of(4, 4, 4), 7)], [0, 1, 2, 0, 1, 2, 0]);
  assert.equal(schedulePeriod(Uint32Array.of(4, 4, 4)), 3);
  assert.equal(schedulePeriod(Uint32Array.of(2, 4, 6)), 6);
  const weights = Uint32Array.of(1, 3, 2);
  const turns = weightedTurns(weights, schedulePeriod(weights));
  // Turn times (k + 1/2) / w: 1/6 (#1), 1/4 (#2), 1/2 (#0 and #1 tie: lower index first), 3/4 (#2), 5/6 (#1).
  assert.deepEqual([...turns], [1, 2, 0, 1, 2, 1]);
});
