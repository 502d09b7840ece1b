// Per-target Maglev permutation parameters (paper section 3.4): target i prefers
// slots (offset + j * skip) mod M for j = 0, 1, 2, ... Both numbers come from the
// fwmark alone, so a target keeps its preference list when others come and go
// (that is what keeps disruption minimal) and every process agrees on it.

import { jhashWords } from "../hash/jhash.js";

// Two fixed, different seeds stand in for the paper's two independent hash
// functions. Changing either changes every table: instances of different
// versions behind the same ECMP group would then disagree, so keep them.
export const OFFSET_SEED = 0x4d61676c; // "Magl"
export const SKIP_SEED = 0x65764c42; // "evLB"

// One-word key buffer reused across calls: no allocation per target.
const key = new Uint32Array(1);

/** offset in [0, M), skip in [1, M-1]; with M prime every skip gives a full permutation. */
export function maglevPermutation(fwmark: number, size: number): { offset: number; skip: number } {
  if (!Number.isInteger(size) || size < 2) {
    throw new RangeError(`Maglev table size must be an integer >= 2, got ${size}`);
  }
  key[0] = fwmark;
  const offset = jhashWords(key, 1, OFFSET_SEED) % size;
  const skip = (jhashWords(key, 1, SKIP_SEED) % (size - 1)) + 1;
  return { offset, skip };
}
