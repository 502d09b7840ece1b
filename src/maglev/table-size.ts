// Maglev table size M: limits, primality, and normalisation of a user-given M.
// M must be prime so that every skip in [1, M-1] is coprime with M, which makes
// each target's (offset + j*skip) mod M sequence a full permutation of the slots.

/** The paper's size: > 100 × N for N up to 655 targets keeps imbalance <= 1%. */
export const DEFAULT_TABLE_SIZE = 65537;
/** Smallest prime for which skip in [1, M-1] still leaves a choice of skips. */
export const MIN_TABLE_SIZE = 3;
/** Largest accepted M (a prime); also keeps hash * M exact in float math (< 2^53). */
export const MAX_TABLE_SIZE = 1_000_003;

/** Deterministic trial division by 2, 3 and 6k±1: M is at most ~10^6, so sqrt(M) ~ 1000. */
export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  if (n < 4) return true;
  if (n % 2 === 0 || n % 3 === 0) return false;
  for (let d = 5; d * d <= n; d += 6) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
  }
  return true;
}

/**
 * Validates M: throws RangeError if it is not an integer in [MIN_TABLE_SIZE, MAX_TABLE_SIZE].
 * A non-prime M is replaced by the largest prime below it; `message` says so, for the
 * caller to print (this module does no I/O).
 */
export function normalizeTableSize(m: number): { size: number; message?: string } {
  if (!Number.isInteger(m) || m < MIN_TABLE_SIZE || m > MAX_TABLE_SIZE) {
    throw new RangeError(
      `Maglev table size must be an integer in [${MIN_TABLE_SIZE}, ${MAX_TABLE_SIZE}], got ${m}`,
    );
  }
  if (isPrime(m)) return { size: m };
  // Walking down always ends: 3 (= MIN_TABLE_SIZE) is prime, and prime gaps
  // below 10^6 are at most 114.
  let p = m - 1;
  while (!isPrime(p)) p--;
  return {
    size: p,
    message: `Maglev table size ${m} is not prime; using ${p}, the largest prime below it`,
  };
}
