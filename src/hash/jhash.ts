// Bob Jenkins' lookup3 as the Linux kernel implements it (include/linux/jhash.h).
// nft's `jhash` expression hashes its concatenated key with exactly this function,
// so a table index computed here equals the kernel's for the same key and seed.

const JHASH_INITVAL = 0xdeadbeef;

function rol32(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * jhash over `nwords` 32-bit words. The kernel reads the key bytes as CPU-endian
 * words; a Uint32Array over the key bytes on a little-endian host reads the same.
 * Length in bytes is nwords * 4 (nft pads every concatenated field to 4 bytes).
 */
export function jhashWords(words: Uint32Array, nwords: number, seed: number): number {
  let length = nwords * 4;
  let a = (JHASH_INITVAL + length + seed) | 0;
  let b = a;
  let c = a;
  let i = 0;
  while (length > 12) {
    a = (a + words[i]) | 0;
    b = (b + words[i + 1]) | 0;
    c = (c + words[i + 2]) | 0;
    // __jhash_mix
    a = (a - c) | 0;
    a ^= rol32(c, 4);
    c = (c + b) | 0;
    b = (b - a) | 0;
    b ^= rol32(a, 6);
    a = (a + c) | 0;
    c = (c - b) | 0;
    c ^= rol32(b, 8);
    b = (b + a) | 0;
    a = (a - c) | 0;
    a ^= rol32(c, 16);
    c = (c + b) | 0;
    b = (b - a) | 0;
    b ^= rol32(a, 19);
    a = (a + c) | 0;
    c = (c - b) | 0;
    c ^= rol32(b, 4);
    b = (b + a) | 0;
    length -= 12;
    i += 3;
  }
  if (length === 0) return c >>> 0;
  // Tail of 1..3 whole words (key lengths here are always multiples of 4).
  a = (a + words[i]) | 0;
  if (length > 4) b = (b + words[i + 1]) | 0;
  if (length > 8) c = (c + words[i + 2]) | 0;
  return jhashFinal(a, b, c);
}

/** The kernel's __jhash_final(a, b, c); returns c. */
function jhashFinal(a: number, b: number, c: number): number {
  c ^= b;
  c = (c - rol32(b, 14)) | 0;
  a ^= c;
  a = (a - rol32(c, 11)) | 0;
  b ^= a;
  b = (b - rol32(a, 25)) | 0;
  c ^= b;
  c = (c - rol32(b, 16)) | 0;
  a ^= c;
  a = (a - rol32(c, 4)) | 0;
  b ^= a;
  b = (b - rol32(a, 14)) | 0;
  c ^= b;
  c = (c - rol32(b, 24)) | 0;
  return c >>> 0;
}

/** The kernel's jhash_3words(a, b, c, seed): three words, no key buffer. */
export function jhash3Words(a: number, b: number, c: number, seed: number): number {
  const init = (seed + JHASH_INITVAL + 12) | 0;
  return jhashFinal((a + init) | 0, (b + init) | 0, (c + init) | 0);
}

/** The kernel's reciprocal_scale(): maps a 32-bit hash onto [0, n) as (hash * n) >> 32. */
export function reciprocalScale(hash: number, n: number): number {
  // hash < 2^32 and n < 2^21 keep the product below 2^53, so the float math is exact.
  return Math.floor((hash * n) / 4294967296);
}
