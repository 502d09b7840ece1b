// The shared state file of one load balancer: created by `nflb init`, changed by the CLI
// under an exclusive file lock, read by any number of daemons through a shared mapping.
import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { rethrowAs } from "../domain/errors.js";
import { parseFwmark } from "../domain/fwmark.js";
import { type WeightRule, weightProblem } from "../domain/weight.js";
import { buildMaglevTable, normalizeTableSize } from "../maglev/maglev.js";
import { LOCK_EX, LOCK_UN, loadAddon } from "../native/addon.js";
import { statePath as lbStatePath, stateDir } from "../paths.js";
import {
  bufferOffset,
  FLAG_SCTP_PORTS_ONLY,
  fileBytes,
  H,
  HEADER_BYTES,
  STATE_MAGIC,
  STATE_VERSION,
  type StateGeometry,
  T,
  TARGET_WORDS,
} from "./layout.js";

export class StateError extends Error {}

export const DEFAULT_MAX_TARGETS = 100;
export const MAX_MAX_TARGETS = 10_000;

/** The state file of a load balancer; a bad name is a StateError. */
export function statePath(name: string): string {
  return rethrowAs(StateError, () => lbStatePath(name));
}

export interface LbConfig {
  name: string;
  tableSize: number;
  maxTargets: number;
  ownFwmark: number;
  hashSeed: number;
  sctpPortsOnly: boolean;
  sctpEncapPort: number;
}

export interface TargetSlot {
  slot: number;
  fwmark: number;
  weight: number;
  active: boolean;
}

/** What `nflb init` asks for: the configuration itself (M may still be adjusted to a prime). */
export type InitOptions = LbConfig;

/** Result of init: the adjusted table size message, if M was not prime. */
export interface InitResult {
  path: string;
  created: boolean;
  message?: string;
}

function geometryOf(opts: { tableSize: number; maxTargets: number }): StateGeometry {
  return { tableSize: opts.tableSize, maxTargets: opts.maxTargets };
}

/**
 * Creates the state file, complete, under a temporary name and renames it into place,
 * so no reader ever finds half a file. Re-running with identical settings is a no-op.
 */
export function initState(opts: InitOptions): InitResult {
  statePath(opts.name);
  let normalized: { size: number; message?: string };
  try {
    normalized = normalizeTableSize(opts.tableSize);
  } catch (err) {
    throw new StateError((err as Error).message);
  }
  if (
    !Number.isInteger(opts.maxTargets) ||
    opts.maxTargets < 1 ||
    opts.maxTargets > MAX_MAX_TARGETS
  ) {
    throw new StateError(
      `invalid --N ${opts.maxTargets}: expected an integer 1..${MAX_MAX_TARGETS}`,
    );
  }
  if (opts.ownFwmark !== 0) rethrowAs(StateError, () => parseFwmark(opts.ownFwmark));
  if (!Number.isInteger(opts.hashSeed) || opts.hashSeed < 0 || opts.hashSeed > 0xffffffff) {
    throw new StateError(`invalid seed ${opts.hashSeed}: expected an integer 0..4294967295`);
  }
  if (
    !Number.isInteger(opts.sctpEncapPort) ||
    opts.sctpEncapPort < 0 ||
    opts.sctpEncapPort > 65535
  ) {
    throw new StateError(
      `invalid SCTP encapsulation port ${opts.sctpEncapPort}: expected 0..65535`,
    );
  }
  const config: LbConfig = { ...opts, tableSize: normalized.size };
  const path = statePath(opts.name);
  const existing = tryOpenState(opts.name);
  if (existing) {
    const keys = Object.keys(config) as (keyof LbConfig)[];
    const same = keys.every((k) => existing.config[k] === config[k]);
    existing.close();
    if (same) return { path, created: false, message: normalized.message };
    throw new StateError(
      `load balancer "${opts.name}" already exists with other settings: run "nflb delete --name ${opts.name}" first`,
    );
  }
  mkdirSync(stateDir(), { recursive: true, mode: 0o755 });
  const g = geometryOf(config);
  const bytes = Buffer.alloc(fileBytes(g));
  const header = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_BYTES / 4);
  header[H.magic] = STATE_MAGIC;
  header[H.version] = STATE_VERSION;
  header[H.generation] = 1;
  header[H.activeBuffer] = 0;
  header[H.tableSize] = config.tableSize;
  header[H.maxTargets] = config.maxTargets;
  header[H.ownFwmark] = config.ownFwmark | 0;
  header[H.hashSeed] = config.hashSeed | 0;
  header[H.flags] = config.sctpPortsOnly ? FLAG_SCTP_PORTS_ONLY : 0;
  header[H.sctpEncapPort] = config.sctpEncapPort;
  header[H.logLevel] = -1;
  const tmp = `${path}.tmp.${process.pid}`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return { path, created: true, message: normalized.message };
}

export function deleteState(name: string): boolean {
  const path = statePath(name);
  const state = tryOpenState(name);
  if (!state) return false;
  state.close();
  rmSync(path, { force: true });
  return true;
}

export function tryOpenState(name: string): StateFile | undefined {
  const path = statePath(name);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new StateError(`cannot open ${path}: ${(err as Error).message}`);
  }
  return new StateFile(name, path, fd);
}

export function openState(name: string): StateFile {
  const state = tryOpenState(name);
  if (!state) {
    throw new StateError(
      `no load balancer named "${name}" (${statePath(name)}): run "nflb init --name ${name}" first`,
    );
  }
  return state;
}

/** A consistent copy of the published targets and table. */
export interface Snapshot {
  generation: number;
  targets: TargetSlot[];
  table: Uint32Array;
}

export class StateFile {
  readonly config: LbConfig;
  readonly geometry: StateGeometry;
  /** Header words; generation and active buffer are read with Atomics. */
  readonly header: Int32Array;
  private readonly mapping: ArrayBuffer;
  private fd: number;
  readonly inode: number;

  constructor(
    readonly name: string,
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
    const st = fstatSync(fd);
    this.inode = st.ino;
    if (st.size < HEADER_BYTES) {
      closeSync(fd);
      throw new StateError(`${path} is not an nflb state file (too small)`);
    }
    const probe = Buffer.alloc(HEADER_BYTES);
    const head = new Int32Array(probe.buffer, probe.byteOffset, HEADER_BYTES / 4);
    readHeader(fd, probe);
    if (head[H.magic] !== STATE_MAGIC || head[H.version] !== STATE_VERSION) {
      closeSync(fd);
      throw new StateError(`${path} is not an nflb state file of version ${STATE_VERSION}`);
    }
    this.geometry = { tableSize: head[H.tableSize], maxTargets: head[H.maxTargets] };
    if (st.size !== fileBytes(this.geometry)) {
      closeSync(fd);
      throw new StateError(`${path} has the wrong size for its geometry: damaged state file`);
    }
    this.mapping = loadAddon().mmapShared(fd, st.size);
    this.header = new Int32Array(this.mapping, 0, HEADER_BYTES / 4);
    this.config = {
      name,
      tableSize: this.geometry.tableSize,
      maxTargets: this.geometry.maxTargets,
      ownFwmark: head[H.ownFwmark] >>> 0,
      hashSeed: head[H.hashSeed] >>> 0,
      sctpPortsOnly: (head[H.flags] & FLAG_SCTP_PORTS_ONLY) !== 0,
      sctpEncapPort: head[H.sctpEncapPort],
    };
  }

  generation(): number {
    return Atomics.load(this.header, H.generation);
  }

  private targetWords(index: number): Uint32Array {
    return new Uint32Array(
      this.mapping,
      bufferOffset(this.geometry, index),
      this.geometry.maxTargets * TARGET_WORDS,
    );
  }

  private tableWords(index: number): Uint32Array {
    return new Uint32Array(
      this.mapping,
      bufferOffset(this.geometry, index) + this.geometry.maxTargets * TARGET_WORDS * 4,
      this.geometry.tableSize,
    );
  }

  /**
   * Copies the published targets and table into the caller's arrays (no allocation, for
   * the daemon). Returns the generation copied, or -1 if writers kept publishing during
   * every attempt (the caller keeps its previous copy and tries again later).
   */
  readInto(targets: Uint32Array, table: Uint32Array): number {
    for (let attempt = 0; attempt < 8; attempt++) {
      const before = Atomics.load(this.header, H.generation);
      const index = Atomics.load(this.header, H.activeBuffer);
      targets.set(this.targetWords(index));
      table.set(this.tableWords(index));
      if (Atomics.load(this.header, H.generation) === before) return before;
    }
    return -1;
  }

  snapshot(): Snapshot {
    const targetWords = new Uint32Array(this.geometry.maxTargets * TARGET_WORDS);
    const table = new Uint32Array(this.geometry.tableSize);
    const generation = this.readInto(targetWords, table);
    if (generation < 0) throw new StateError(`${this.path} is changing too fast to read`);
    return { generation, targets: decodeTargets(targetWords), table };
  }

  /**
   * Changes the target set under an exclusive lock: `change` edits a copy of the slots,
   * the table is rebuilt, written to the inactive buffer and published in one store.
   * If `change` throws, nothing is written.
   */
  update(change: (targets: TargetSlot[]) => void): Snapshot {
    this.lock();
    try {
      const current = this.snapshot();
      const targets = current.targets.map((t) => ({ ...t }));
      change(targets);
      const active = targets.filter((t) => t.active && t.fwmark !== 0);
      let table: Uint32Array;
      try {
        table = buildMaglevTable(
          active.map((t) => ({ fwmark: t.fwmark, weight: t.weight })),
          this.geometry.tableSize,
        );
      } catch (err) {
        throw new StateError((err as Error).message);
      }
      const next = 1 - Atomics.load(this.header, H.activeBuffer);
      const words = this.targetWords(next);
      words.fill(0);
      for (const t of targets) {
        const base = t.slot * TARGET_WORDS;
        words[base + T.fwmark] = t.fwmark;
        words[base + T.weight] = t.weight;
        words[base + T.active] = t.active ? 1 : 0;
      }
      this.tableWords(next).set(table);
      Atomics.store(this.header, H.activeBuffer, next);
      const generation = Atomics.add(this.header, H.generation, 1) + 1;
      return { generation, targets, table };
    } finally {
      this.unlock();
    }
  }

  logLevel(): number {
    return Atomics.load(this.header, H.logLevel);
  }

  setLogLevel(level: number): void {
    Atomics.store(this.header, H.logLevel, level);
  }

  private lock(): void {
    const addon = loadAddon();
    const rc = addon.flock(this.fd, LOCK_EX);
    if (rc < 0) throw new StateError(`cannot lock ${this.path}: ${addon.strerror(rc)}`);
  }

  private unlock(): void {
    loadAddon().flock(this.fd, LOCK_UN);
  }

  close(): void {
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

function readHeader(fd: number, into: Buffer): void {
  // Positional read: the header is checked before the file is mapped.
  readSync(fd, into, 0, into.length, 0);
}

export function decodeTargets(words: Uint32Array): TargetSlot[] {
  const targets: TargetSlot[] = [];
  for (let slot = 0; slot * TARGET_WORDS < words.length; slot++) {
    const base = slot * TARGET_WORDS;
    const fwmark = words[base + T.fwmark];
    if (fwmark === 0) continue;
    targets.push({
      slot,
      fwmark,
      weight: words[base + T.weight],
      active: words[base + T.active] === 1,
    });
  }
  return targets;
}

/**
 * Activates (or re-weights) targets, reusing a target's slot so its counters stay its own.
 * Weight 0 (a setup's FWMARK=ADDR@0, `rule.allowZero`) keeps a target known with no table
 * entries: no new flows.
 */
export function activateTargets(
  targets: TargetSlot[],
  fwmarks: number[],
  weight: number,
  maxTargets: number,
  rule: WeightRule = {},
): void {
  const problem = weightProblem(weight, rule);
  if (problem !== undefined) throw new StateError(problem);
  for (const fwmark of fwmarks) {
    const existing = targets.find((t) => t.fwmark === fwmark);
    if (existing) {
      existing.active = true;
      existing.weight = weight;
      continue;
    }
    const used = new Set(targets.map((t) => t.slot));
    let slot = 0;
    while (used.has(slot)) slot++;
    if (slot >= maxTargets) {
      // All slots taken: reuse the slot of an inactive target, if any.
      const idle = targets.findIndex((t) => !t.active);
      if (idle < 0) {
        throw new StateError(
          `cannot activate ${fwmark}: all ${maxTargets} target slots are in use (init --N)`,
        );
      }
      slot = targets[idle].slot;
      targets.splice(idle, 1);
    }
    targets.push({ slot, fwmark, weight, active: true });
  }
}

export function deactivateTargets(targets: TargetSlot[], fwmarks: number[]): void {
  for (const fwmark of fwmarks) {
    const existing = targets.find((t) => t.fwmark === fwmark);
    if (!existing) throw new StateError(`unknown fwmark ${fwmark}: it was never activated`);
    existing.active = false;
  }
}
