// Encoding, decoding and verification of the state file's header and buffers (see
// layout.ts). Pure: functions of typed arrays, no I/O; the verifiers return what is wrong
// as text (undefined when nothing is) and never throw, so a reader on the packet thread
// can call them.
import { headerChecksum, tableChecksum, targetsChecksum } from "./checksum.js";
import {
  ADMIN_CODES,
  ALL_DOWN_CODES,
  B,
  BUFFER_MAGIC,
  FLAG_SCTP_PORTS_ONLY,
  H,
  HEADER_WORDS,
  HEALTH_CODES,
  SETTING_WORDS,
  STAMP_WORDS,
  STATE_MAGIC,
  STATE_VERSION,
  type StateGeometry,
  T,
  TARGET_WORDS,
  TS_ACTIVE,
  TS_ADMIN_SHIFT,
  TS_CODE_MASK,
  TS_HEALTH_SHIFT,
  TS_IN_TABLE,
  tableStart,
} from "./layout.js";
import type { AllDownPolicy, TargetSlot } from "./targets.js";

/** The settings fixed at init, as the header and every buffer stamp hold them. */
export interface StateSettings {
  tableSize: number;
  maxTargets: number;
  ownFwmark: number;
  hashSeed: number;
  sctpPortsOnly: boolean;
  sctpEncapPort: number;
}

/** The settings as words, in SETTING_WORDS order. */
export function settingsWords(s: StateSettings): number[] {
  return [
    s.tableSize,
    s.maxTargets,
    s.ownFwmark >>> 0,
    s.hashSeed >>> 0,
    s.sctpPortsOnly ? FLAG_SCTP_PORTS_ONLY : 0,
    s.sctpEncapPort,
  ];
}

function settingsFrom(
  words: Uint32Array | Int32Array,
  index: (pair: readonly [number, number]) => number,
): StateSettings {
  const w = SETTING_WORDS.map((pair) => words[index(pair)] >>> 0);
  return {
    tableSize: w[0],
    maxTargets: w[1],
    ownFwmark: w[2],
    hashSeed: w[3],
    sctpPortsOnly: (w[4] & FLAG_SCTP_PORTS_ONLY) !== 0,
    sctpEncapPort: w[5],
  };
}

export function headerSettings(header: Uint32Array | Int32Array): StateSettings {
  return settingsFrom(header, ([h]) => h);
}

export function stampSettings(buffer: Uint32Array): StateSettings {
  return settingsFrom(buffer, ([, b]) => b);
}

/** A fresh header (generation 1, log level unset) with its checksum. */
export function encodeHeader(into: Int32Array, s: StateSettings): void {
  into.fill(0, 0, HEADER_WORDS);
  into[H.magic] = STATE_MAGIC;
  into[H.version] = STATE_VERSION;
  into[H.generation] = 1;
  const words = settingsWords(s);
  SETTING_WORDS.forEach(([h], i) => {
    into[h] = words[i] | 0;
  });
  into[H.logLevel] = -1;
  into[H.headerChecksum] = headerChecksum(into) | 0;
}

/**
 * What is wrong with a header, or undefined. `expected`, when given, are the settings
 * the reader opened the file with: a header that changed since then is damaged too.
 */
export function headerProblem(
  header: Uint32Array,
  expected?: readonly number[],
): string | undefined {
  if (header[H.magic] !== STATE_MAGIC) return "bad magic number in the header";
  if (header[H.version] !== STATE_VERSION) {
    return `state version ${header[H.version]} in the header, this nflb reads version ${STATE_VERSION}`;
  }
  if (header[H.headerChecksum] !== headerChecksum(header)) return "header checksum mismatch";
  if (expected !== undefined) {
    for (let i = 0; i < SETTING_WORDS.length; i++) {
      if (header[SETTING_WORDS[i][0]] !== expected[i]) return "header settings changed";
    }
  }
  return undefined;
}

/** Writes a complete buffer: stamp, targets, table, then both checksums. */
export function encodeBuffer(
  into: Uint32Array,
  g: StateGeometry,
  settings: readonly number[],
  generation: number,
  allDownPolicy: AllDownPolicy,
  targets: readonly TargetSlot[],
  table: Uint32Array,
): void {
  into.fill(0, 0, STAMP_WORDS + g.maxTargets * TARGET_WORDS);
  into[B.magic] = BUFFER_MAGIC;
  into[B.generation] = generation >>> 0;
  SETTING_WORDS.forEach(([, b], i) => {
    into[b] = settings[i];
  });
  into[B.allDownPolicy] = ALL_DOWN_CODES.indexOf(allDownPolicy);
  for (const t of targets) {
    const base = STAMP_WORDS + t.slot * TARGET_WORDS;
    into[base + T.fwmark] = t.fwmark;
    into[base + T.weight] = t.weight;
    into[base + T.status] =
      (t.active ? TS_ACTIVE : 0) |
      (t.inTable ? TS_IN_TABLE : 0) |
      (ADMIN_CODES.indexOf(t.admin) << TS_ADMIN_SHIFT) |
      (HEALTH_CODES.indexOf(t.health) << TS_HEALTH_SHIFT);
    into[base + T.downSeq] = t.downSeq;
  }
  into.set(table, tableStart(g));
  into[B.targetsChecksum] = targetsChecksum(into, g);
  into[B.tableChecksum] = tableChecksum(into, g);
}

/** What is wrong with the stamp and targets of a buffer (its table aside), or undefined. */
export function targetsProblem(buffer: Uint32Array, g: StateGeometry): string | undefined {
  if (buffer[B.magic] !== BUFFER_MAGIC) return "the buffer has no valid stamp";
  if (buffer[B.targetsChecksum] !== targetsChecksum(buffer, g)) {
    return "checksum mismatch in the targets";
  }
  if (buffer[B.allDownPolicy] >= ALL_DOWN_CODES.length) return "bad all-down policy code";
  return undefined;
}

/**
 * What is wrong with a copy of the published buffer, or undefined: its stamp, the
 * generation it says it was published as (must be the header's), the settings it was
 * written for (must be the reader's), both checksums.
 */
export function bufferProblem(
  buffer: Uint32Array,
  g: StateGeometry,
  generation: number,
  expected: readonly number[],
): string | undefined {
  if (buffer[B.magic] !== BUFFER_MAGIC) {
    return `the active buffer (${generation & 1}) has no valid stamp`;
  }
  if (buffer[B.generation] !== generation >>> 0) {
    return `generation ${generation >>> 0} in the header does not match the active buffer's (${buffer[B.generation]})`;
  }
  for (let i = 0; i < SETTING_WORDS.length; i++) {
    if (buffer[SETTING_WORDS[i][1]] !== expected[i]) {
      return "the active buffer was written for other settings than the header's";
    }
  }
  const targets = targetsProblem(buffer, g);
  if (targets !== undefined) return targets;
  if (buffer[B.tableChecksum] !== tableChecksum(buffer, g)) {
    return "checksum mismatch in the table";
  }
  return undefined;
}

export function decodePolicy(buffer: Uint32Array): AllDownPolicy {
  return ALL_DOWN_CODES[buffer[B.allDownPolicy]] ?? "keep-last";
}

/** The used target slots of a (verified) buffer. */
export function decodeTargets(buffer: Uint32Array, g: StateGeometry): TargetSlot[] {
  const targets: TargetSlot[] = [];
  for (let slot = 0; slot < g.maxTargets; slot++) {
    const base = STAMP_WORDS + slot * TARGET_WORDS;
    const fwmark = buffer[base + T.fwmark];
    if (fwmark === 0) continue;
    const status = buffer[base + T.status];
    targets.push({
      slot,
      fwmark,
      weight: buffer[base + T.weight],
      active: (status & TS_ACTIVE) !== 0,
      inTable: (status & TS_IN_TABLE) !== 0,
      admin: ADMIN_CODES[(status >>> TS_ADMIN_SHIFT) & TS_CODE_MASK] ?? "enabled",
      health: HEALTH_CODES[(status >>> TS_HEALTH_SHIFT) & TS_CODE_MASK] ?? "unknown",
      downSeq: buffer[base + T.downSeq],
    });
  }
  return targets;
}
