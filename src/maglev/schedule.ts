// Weighted turn order for the Maglev populate loop.
//
// The paper's loop gives targets turns in round-robin order; on its turn a target
// claims the next free slot of its own permutation. To weight it, target i takes its
// k-th turn (k = 0, 1, ...) at virtual time (k + 1/2) / w_i (Sainte-Laguë divisors)
// and turns run in time order, ties broken by target index (= fwmark order). Each turn
// claims exactly one slot, so by time T target i has claimed round(T * w_i) slots:
// its share stays within about one entry of w_i / sum(w) * M, whatever the weights.
//
// Why this scheme: with equal weights every target's k-th turn ties, so the order is
// plain round robin, i.e. exactly the paper's algorithm. Removing a target (or changing
// its weight) only deletes (or moves) its own turns; everyone else's keep their
// relative order, which is what the paper's minimal-disruption argument rests on.
// Scaling all weights changes nothing.
//
// The order is periodic: in every unit of virtual time [T, T+1) target i takes turns at
// T + (j + 1/2) / w_i, j < w_i, the same pattern each time. With the weights divided by
// their gcd the period is sum(w) / gcd turns (N for equal weights), so the build only
// computes one period (or M turns if shorter) and cycles through it.

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const r = a % b;
    a = b;
    b = r;
  }
  return a;
}

/** Turns in one period of the schedule for these weights (all > 0): sum(w) / gcd(w). */
export function schedulePeriod(weights: Uint32Array): number {
  let g = 0;
  for (let i = 0; i < weights.length; i++) g = gcd(weights[i], g);
  let period = 0;
  for (let i = 0; i < weights.length; i++) period += weights[i] / g;
  return period;
}

/*
 * Turn times are doubles num / w (num = 2k + 1; the common factor 1/2 is dropped).
 * IEEE division rounds correctly, so equal fractions give equal doubles, and distinct
 * fractions (numerators < 2^22, denominators <= 65535) differ by far more than an ulp:
 * comparing the doubles orders turns exactly as the fractions, in every process.
 */
function earlier(a: number, b: number, time: Float64Array): boolean {
  return time[a] < time[b] || (time[a] === time[b] && a < b);
}

function siftDown(heap: Uint32Array, n: number, time: Float64Array, i: number): void {
  const t = heap[i];
  for (;;) {
    let c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && earlier(heap[c + 1], heap[c], time)) c++;
    if (!earlier(heap[c], t, time)) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = t;
}

/**
 * The first `count` turns of the weighted schedule: entry j is the index (into
 * `weights`) of the target taking turn j. All weights must be > 0. A binary heap
 * keyed on each target's next turn time picks the next target in O(log N).
 */
export function weightedTurns(weights: Uint32Array, count: number): Uint32Array {
  const n = weights.length;
  const turns = new Uint32Array(count);
  if (n === 0) return turns;
  const num = new Uint32Array(n);
  const time = new Float64Array(n);
  const heap = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    num[i] = 1;
    time[i] = 1 / weights[i];
    heap[i] = i;
  }
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(heap, n, time, i);
  for (let j = 0; j < count; j++) {
    const t = heap[0];
    turns[j] = t;
    num[t] += 2;
    time[t] = num[t] / weights[t];
    siftDown(heap, n, time, 0);
  }
  return turns;
}
