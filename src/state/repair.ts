// `nflb init --force`: rebuild a load balancer's state from what is still readable.
//
// Every buffer carries its own copy of the settings and a checksum over its stamp and
// targets, so a buffer can be trusted without the header: the repair looks at both
// buffers (located by the header's geometry, or by the file size alone when the header
// is damaged), takes the newest one whose targets verify (its table need not: the table
// is rebuilt from the targets), and writes a new file (rename: readers never see half of
// it; a running daemon reloads it within a second). Settings given on the command line
// win; the rest comes from that buffer, else from the header if it verifies, else from
// the defaults. On a healthy state, --force with other settings rebuilds it with them and
// keeps the targets.
import { closeSync, constants, openSync, readFileSync } from "node:fs";
import { MAX_TABLE_SIZE, MIN_TABLE_SIZE } from "../maglev/maglev.js";
import { LOCK_EX, loadAddon } from "../native/addon.js";
import { tableChecksum } from "./checksum.js";
import {
  decodePolicy,
  decodeTargets,
  headerProblem,
  headerSettings,
  type StateSettings,
  stampSettings,
  targetsProblem,
} from "./codec.js";
import { B, bufferBytes, HEADER_BYTES, HEADER_WORDS, type StateGeometry } from "./layout.js";
import {
  checkSettings,
  type InitOptions,
  initState,
  type LbConfig,
  MAX_MAX_TARGETS,
  StateDamageError,
  StateError,
  statePath,
  tryOpenState,
  writeStateFile,
} from "./store.js";
import type { AllDownPolicy, TargetSlot } from "./targets.js";

export type RepairSettings = Omit<InitOptions, "name">;

export interface RepairResult {
  path: string;
  /** What was wrong (undefined: the state was fine, or there was none). */
  damage?: string;
  /** There was no state: a new one was created. */
  created: boolean;
  /** The state was fine and the settings the same: nothing was done. */
  unchanged: boolean;
  /** Where the targets came from; undefined when none could be read (rebuilt empty). */
  recovered?: { generation: number; targets: number; tableWasDamaged: boolean };
  /** Where the settings came from (those not given on the command line). */
  settingsFrom: "state" | "buffer" | "header" | "defaults";
  /** M was not prime (the message of init). */
  message?: string;
}

interface Candidate {
  generation: number;
  settings: StateSettings;
  policy: AllDownPolicy;
  targets: TargetSlot[];
  tableOk: boolean;
}

/** A buffer of the raw file at `offset`, if its stamp and targets verify. */
function candidateAt(raw: Uint8Array, offset: number, expectBytes: number): Candidate | undefined {
  if (offset + 64 > raw.length || offset % 4 !== 0) return undefined;
  const words = new Uint32Array(raw.buffer, raw.byteOffset + offset, (raw.length - offset) >>> 2);
  const settings = stampSettings(words);
  const g: StateGeometry = { tableSize: settings.tableSize, maxTargets: settings.maxTargets };
  if (g.tableSize < MIN_TABLE_SIZE || g.tableSize > MAX_TABLE_SIZE || g.maxTargets < 1) {
    return undefined;
  }
  if (g.maxTargets > MAX_MAX_TARGETS || bufferBytes(g) !== expectBytes) return undefined;
  const buffer = words.subarray(0, expectBytes / 4);
  if (targetsProblem(buffer, g) !== undefined) return undefined;
  return {
    generation: buffer[B.generation],
    settings,
    policy: decodePolicy(buffer),
    targets: decodeTargets(buffer, g),
    tableOk: buffer[B.tableChecksum] === tableChecksum(buffer, g),
  };
}

/** The newest buffer of a damaged file whose stamp and targets verify. */
function bestBuffer(raw: Uint8Array): Candidate | undefined {
  if (raw.length < HEADER_BYTES || (raw.length - HEADER_BYTES) % 8 !== 0) return undefined;
  const half = (raw.length - HEADER_BYTES) / 2;
  const found = [candidateAt(raw, HEADER_BYTES, half), candidateAt(raw, HEADER_BYTES + half, half)];
  return found
    .filter((c): c is Candidate => c !== undefined)
    .sort((a, b) => b.generation - a.generation)[0];
}

function readRaw(path: string): Uint8Array {
  const bytes = readFileSync(path);
  // Aligned copy: the buffers are read as 32-bit words.
  const raw = new Uint8Array(bytes.length);
  raw.set(bytes);
  return raw;
}

/** The old header's settings, if it verifies. */
function headerOf(raw: Uint8Array): StateSettings | undefined {
  if (raw.length < HEADER_BYTES) return undefined;
  const header = new Uint32Array(raw.buffer, raw.byteOffset, HEADER_WORDS);
  return headerProblem(header) === undefined ? headerSettings(header) : undefined;
}

/**
 * Rebuilds the state of `name`: `given` are the settings named on the command line,
 * `defaults` those of a fresh init. See the top of this file.
 */
export function repairState(
  name: string,
  given: Partial<RepairSettings>,
  defaults: RepairSettings,
): RepairResult {
  const path = statePath(name);
  let lockFd = -1;
  try {
    lockFd = openSync(path, constants.O_RDWR);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new StateError(`cannot open ${path}: ${(err as Error).message}`);
    }
    const r = initState({ ...defaults, ...given, name });
    return { path, created: true, unchanged: false, settingsFrom: "defaults", message: r.message };
  }
  try {
    // Writers wait; when they get the lock they find the file replaced and fail cleanly.
    loadAddon().flock(lockFd, LOCK_EX);
    return rebuild(name, path, given, defaults);
  } finally {
    closeSync(lockFd);
  }
}

function rebuild(
  name: string,
  path: string,
  given: Partial<RepairSettings>,
  defaults: RepairSettings,
): RepairResult {
  let damage: string | undefined;
  let source: Candidate | undefined;
  let settingsFrom: RepairResult["settingsFrom"] = "defaults";
  let base: StateSettings = defaults;
  try {
    const state = tryOpenState(name);
    if (state) {
      try {
        const snap = state.snapshot();
        base = state.config;
        settingsFrom = "state";
        source = {
          generation: snap.generation,
          settings: state.config,
          policy: snap.allDownPolicy,
          targets: snap.targets,
          tableOk: true,
        };
      } finally {
        state.close();
      }
    }
  } catch (err) {
    if (!(err instanceof StateDamageError)) throw err;
    damage = err.reason;
  }
  if (damage !== undefined) {
    const raw = readRaw(path);
    source = bestBuffer(raw);
    const header = headerOf(raw);
    if (source) {
      base = source.settings;
      settingsFrom = "buffer";
    } else if (header) {
      base = header;
      settingsFrom = "header";
    }
  }
  const policy = given.allDownPolicy ?? source?.policy ?? defaults.allDownPolicy;
  const { config, message } = checkSettings({ ...base, ...given, name, allDownPolicy: policy });
  if (
    damage === undefined &&
    source &&
    sameSettings(config, source.settings, policy, source.policy)
  ) {
    return { path, created: false, unchanged: true, settingsFrom, message };
  }
  const targets = placeTargets(source?.targets ?? [], config.maxTargets);
  writeStateFile(
    config,
    ((source?.generation ?? 0) + 1) >>> 0 || 1,
    policy ?? "keep-last",
    targets,
  );
  return {
    path,
    damage,
    created: false,
    unchanged: false,
    recovered: source
      ? { generation: source.generation, targets: targets.length, tableWasDamaged: !source.tableOk }
      : undefined,
    settingsFrom,
    message,
  };
}

function sameSettings(
  a: LbConfig,
  b: StateSettings,
  policyA: AllDownPolicy | undefined,
  policyB: AllDownPolicy,
): boolean {
  const keys = Object.keys(b) as (keyof StateSettings)[];
  return keys.every((k) => a[k] === b[k]) && (policyA === undefined || policyA === policyB);
}

/** Keeps each target's slot where it fits the (new) N, else gives it a free one. */
function placeTargets(targets: TargetSlot[], maxTargets: number): TargetSlot[] {
  if (targets.length > maxTargets) {
    throw new StateError(
      `the state has ${targets.length} targets, more than --N ${maxTargets}: give a larger --N`,
    );
  }
  const used = new Set(targets.filter((t) => t.slot < maxTargets).map((t) => t.slot));
  let free = 0;
  return targets.map((t) => {
    if (t.slot < maxTargets) return { ...t };
    while (used.has(free)) free++;
    used.add(free);
    return { ...t, slot: free };
  });
}
