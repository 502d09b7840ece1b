// Byte layout of a load balancer's shared state file (/dev/shm/nflb/<name>), version 2.
//
// The CLI (and the service) writes, daemons read, at any time and without talking to each
// other. The file is a header and two copies ("buffers") of the targets and the Maglev
// table. A writer fills the inactive buffer and publishes it with one atomic store: the
// generation. The active buffer is generation & 1, so the generation alone says which
// buffer is published. A reader copies the active buffer and accepts the copy only if the
// generation did not move meanwhile (it never sees half an update) and the copy verifies.
// A writer that dies half-way leaves the published buffer untouched.
//
// Damage (a stray write, a zeroed or overwritten file) is detected, never used:
// - the header's fixed words carry a checksum (CRC-32 of every header word but the
//   generation, the log level and the checksum itself);
// - each buffer starts with a stamp: its own magic, the generation it was published as
//   (it must equal the header's), a copy of the header's settings (they must equal the
//   reader's) and two CRC-32s, one over the stamp and the targets, one over the table.
//   Two, so that a repair can trust the targets of a buffer whose table is damaged: the
//   table is rebuilt from the targets anyway.
// The log level word is outside every checksum: `nflb loglevel` changes it in place, and
// readers range-check it.

export const STATE_MAGIC = 0x424c464e; // "NFLB"
export const STATE_VERSION = 2;
export const BUFFER_MAGIC = 0x5442464e; // "NFBT"

/** Header word indices (32-bit words). */
export const H = {
  magic: 0,
  version: 1,
  generation: 2,
  /** Version 1 kept the active buffer index here; version 2 uses generation & 1. Zero. */
  reserved3: 3,
  tableSize: 4,
  maxTargets: 5,
  ownFwmark: 6,
  hashSeed: 7,
  flags: 8,
  sctpEncapPort: 9,
  logLevel: 10,
  headerChecksum: 11,
} as const;

export const HEADER_BYTES = 256;
export const HEADER_WORDS = HEADER_BYTES / 4;

/** Header words outside the header checksum: they change after init. */
export const UNCHECKED_HEADER_WORDS: readonly number[] = [
  H.generation,
  H.logLevel,
  H.headerChecksum,
];

/** Per-load-balancer option bits (H.flags). */
export const FLAG_SCTP_PORTS_ONLY = 1;

/** Buffer stamp word indices. */
export const B = {
  magic: 0,
  generation: 1,
  /** CRC-32 of the stamp (both checksum words as zero) and the target slots. */
  targetsChecksum: 2,
  /** CRC-32 of the table. */
  tableChecksum: 3,
  // A copy of the header's settings, so that a buffer is checked against the settings it
  // was written for, and a repair can recover them from a buffer if the header is lost.
  tableSize: 4,
  maxTargets: 5,
  ownFwmark: 6,
  hashSeed: 7,
  flags: 8,
  sctpEncapPort: 9,
  /** What the table holds when health takes every target out (ALL_DOWN_CODES). */
  allDownPolicy: 10,
} as const;
export const STAMP_WORDS = 16;

/** The header settings and where the stamp keeps their copy. */
export const SETTING_WORDS: readonly (readonly [header: number, stamp: number])[] = [
  [H.tableSize, B.tableSize],
  [H.maxTargets, B.maxTargets],
  [H.ownFwmark, B.ownFwmark],
  [H.hashSeed, B.hashSeed],
  [H.flags, B.flags],
  [H.sctpEncapPort, B.sctpEncapPort],
];

/** Words per target slot. A slot with fwmark 0 is free. */
export const TARGET_WORDS = 4;
export const T = {
  fwmark: 0,
  weight: 1,
  /** TS_* bits, admin and health codes. */
  status: 2,
  /** Order in which health took the target out (see keep-last); 0 = never. */
  downSeq: 3,
} as const;

/** T.status: activated (activate/deactivate). */
export const TS_ACTIVE = 1;
/** T.status: in the set the published table was built from (computed by the writer). */
export const TS_IN_TABLE = 2;
export const TS_ADMIN_SHIFT = 4;
export const TS_HEALTH_SHIFT = 8;
export const TS_CODE_MASK = 0xf;

/** Codes of the admin states and healths in T.status, and of the all-down policies. */
export const ADMIN_CODES = ["enabled", "disabled", "drain"] as const;
export const HEALTH_CODES = ["unknown", "up", "down"] as const;
export const ALL_DOWN_CODES = ["keep-last", "none"] as const;

export interface StateGeometry {
  tableSize: number;
  maxTargets: number;
}

export function bufferWords(g: StateGeometry): number {
  return STAMP_WORDS + g.maxTargets * TARGET_WORDS + g.tableSize;
}

export function bufferBytes(g: StateGeometry): number {
  return bufferWords(g) * 4;
}

/** Byte offset of buffer 0 or 1. */
export function bufferOffset(g: StateGeometry, index: number): number {
  return HEADER_BYTES + index * bufferBytes(g);
}

export function fileBytes(g: StateGeometry): number {
  return HEADER_BYTES + 2 * bufferBytes(g);
}

/** Word offsets inside a buffer. */
export function targetsStart(): number {
  return STAMP_WORDS;
}

export function tableStart(g: StateGeometry): number {
  return STAMP_WORDS + g.maxTargets * TARGET_WORDS;
}
