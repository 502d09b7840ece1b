// Byte layout of a load balancer's shared state file (/dev/shm/nflb/<name>).
//
// The CLI writes, the daemon reads, at any time and without talking to each other.
// Two copies ("buffers") of the targets and the Maglev table live in the file: a writer
// fills the inactive copy, then publishes it by storing its index and bumping the
// generation. A reader copies the active buffer and accepts the copy only if the
// generation did not move meanwhile, so it never sees half an update, and a writer that
// dies half-way leaves the published copy untouched.

export const STATE_MAGIC = 0x424c464e; // "NFLB"
export const STATE_VERSION = 1;

/** Header word indices (Int32 words). */
export const H = {
  magic: 0,
  version: 1,
  generation: 2,
  activeBuffer: 3,
  tableSize: 4,
  maxTargets: 5,
  ownFwmark: 6,
  hashSeed: 7,
  flags: 8,
  sctpEncapPort: 9,
  logLevel: 10,
} as const;

export const HEADER_BYTES = 256;

/** Per-load-balancer option bits (H.flags). */
export const FLAG_SCTP_PORTS_ONLY = 1;

/** Words per target slot: fwmark, weight, active, reserved. */
export const TARGET_WORDS = 4;
export const T = { fwmark: 0, weight: 1, active: 2 } as const;

export interface StateGeometry {
  tableSize: number;
  maxTargets: number;
}

export function bufferBytes(g: StateGeometry): number {
  return g.maxTargets * TARGET_WORDS * 4 + g.tableSize * 4;
}

export function bufferOffset(g: StateGeometry, index: number): number {
  return HEADER_BYTES + index * bufferBytes(g);
}

export function fileBytes(g: StateGeometry): number {
  return HEADER_BYTES + 2 * bufferBytes(g);
}
