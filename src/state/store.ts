// The shared state file of one load balancer: created by `nflb init`, changed by the CLI
// (and the service) under an exclusive file lock, read by any number of daemons through
// a shared mapping. Layout and damage detection: layout.ts; the target rules: targets.ts.
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { rethrowAs } from "../domain/errors.js";
import { parseFwmark } from "../domain/fwmark.js";
import {
  buildMaglevTable,
  DEFAULT_TABLE_SIZE,
  isPrime,
  MAX_TABLE_SIZE,
  MIN_TABLE_SIZE,
  normalizeTableSize,
} from "../maglev/maglev.js";
import { LOCK_EX, LOCK_UN, loadAddon } from "../native/addon.js";
import { statePath as lbStatePath, stateDir } from "../paths.js";
import {
  bufferProblem,
  decodePolicy,
  decodeTargets,
  encodeBuffer,
  encodeHeader,
  headerProblem,
  headerSettings,
  type StateSettings,
  settingsWords,
} from "./codec.js";
import {
  bufferOffset,
  bufferWords,
  fileBytes,
  H,
  HEADER_BYTES,
  HEADER_WORDS,
  type StateGeometry,
  tableStart,
} from "./layout.js";
import {
  type AllDownPolicy,
  activateTargets,
  checkTargets,
  DEFAULT_ALL_DOWN_POLICY,
  decideTable,
  type LbTableSettings,
  type TargetSlot,
} from "./targets.js";

export * from "./targets.js";

export class StateError extends Error {}

/** The state file exists but cannot be trusted; the message says how to recover. */
export class StateDamageError extends StateError {
  constructor(
    readonly lbName: string,
    readonly path: string,
    readonly reason: string,
  ) {
    super(
      `state of load balancer "${lbName}" (${path}) is damaged: ${reason}; ` +
        `"nflb init --force --name ${lbName}" rebuilds it from its targets, ` +
        `"nflb delete --name ${lbName}" removes it`,
    );
  }
}

export const DEFAULT_MAX_TARGETS = 100;
export const MAX_MAX_TARGETS = 10_000;

/** StateFile.readBuffer()/audit() results other than a generation. */
export const READ_BUSY = -1;
export const READ_DAMAGED = -2;

/** The state file of a load balancer; a bad name is a StateError. */
export function statePath(name: string): string {
  return rethrowAs(StateError, () => lbStatePath(name));
}

export interface LbConfig extends StateSettings {
  name: string;
}

/** What `nflb init` asks for (M may still be adjusted to a prime). */
export interface InitOptions extends LbConfig {
  /** Default keep-last. */
  allDownPolicy?: AllDownPolicy;
}

/** Result of init: the adjusted table size message, if M was not prime. */
export interface InitResult {
  path: string;
  created: boolean;
  message?: string;
}

/** A consistent, verified copy of the published targets and table. */
export interface Snapshot {
  generation: number;
  targets: TargetSlot[];
  table: Uint32Array;
  allDownPolicy: AllDownPolicy;
}

/** Checks init's settings; returns them with M made prime (and the message saying so). */
export function checkSettings(opts: InitOptions): { config: LbConfig; message?: string } {
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
  const config: LbConfig = {
    name: opts.name,
    tableSize: normalized.size,
    maxTargets: opts.maxTargets,
    ownFwmark: opts.ownFwmark,
    hashSeed: opts.hashSeed,
    sctpPortsOnly: opts.sctpPortsOnly,
    sctpEncapPort: opts.sctpEncapPort,
  };
  return { config, message: normalized.message };
}

/**
 * Writes a complete state file under a temporary name and renames it into place, so no
 * reader ever finds half a file: the header, and the buffer of `generation` with these
 * targets and the table built from them.
 */
export function writeStateFile(
  config: LbConfig,
  generation: number,
  allDownPolicy: AllDownPolicy,
  targets: TargetSlot[],
): string {
  const path = statePath(config.name);
  const g: StateGeometry = { tableSize: config.tableSize, maxTargets: config.maxTargets };
  checkTargets(targets, g.maxTargets);
  const table = buildTable(targets, allDownPolicy, g.tableSize);
  const bytes = Buffer.alloc(fileBytes(g));
  const header = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_WORDS);
  encodeHeader(header, config);
  header[H.generation] = generation | 0;
  const index = generation & 1;
  const buffer = new Uint32Array(
    bytes.buffer,
    bytes.byteOffset + bufferOffset(g, index),
    bufferWords(g),
  );
  encodeBuffer(buffer, g, settingsWords(config), generation, allDownPolicy, targets, table);
  mkdirSync(stateDir(), { recursive: true, mode: 0o755 });
  const tmp = `${path}.tmp.${process.pid}`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return path;
}

/** Decides which targets are in the table (setting inTable) and builds the table. */
function buildTable(targets: TargetSlot[], policy: AllDownPolicy, tableSize: number): Uint32Array {
  const { members } = decideTable(targets, policy);
  const inTable = new Set(members.map((t) => t.fwmark));
  for (const t of targets) t.inTable = inTable.has(t.fwmark);
  try {
    return buildMaglevTable(
      members.map((t) => ({ fwmark: t.fwmark, weight: t.weight })),
      tableSize,
    );
  } catch (err) {
    throw new StateError((err as Error).message);
  }
}

/**
 * Creates the state file. Re-running with identical settings is a no-op; other settings
 * are refused (`nflb init --force` is repairState()). A damaged state is refused with a
 * StateDamageError that says how to recover.
 */
export function initState(opts: InitOptions): InitResult {
  const { config, message } = checkSettings(opts);
  const path = statePath(opts.name);
  const existing = tryOpenState(opts.name);
  if (existing) {
    try {
      const keys = Object.keys(config) as (keyof LbConfig)[];
      const policy = existing.snapshot().allDownPolicy;
      const same =
        keys.every((k) => existing.config[k] === config[k]) &&
        (opts.allDownPolicy === undefined || opts.allDownPolicy === policy);
      if (same) return { path, created: false, message };
    } finally {
      existing.close();
    }
    throw new StateError(
      `load balancer "${opts.name}" already exists with other settings: run "nflb delete --name ${opts.name}" first, or "nflb init --force" to change them and keep the targets`,
    );
  }
  writeStateFile(config, 1, opts.allDownPolicy ?? DEFAULT_ALL_DOWN_POLICY, []);
  return { path, created: true, message };
}

/**
 * What `nflb setup` needs in the daemon modes: the load balancer's state (created with
 * default settings, room for at least these targets, if there is none) with these targets
 * active at these weights (0: in the set, no new flows), in one generation. Returns
 * whether it created the state, so that a failed setup can remove it again; if the
 * activation fails, a state created here is removed.
 */
export function ensureActiveTargets(
  name: string,
  targets: readonly { fwmark: number; weight: number }[],
): { created: boolean } {
  let created = false;
  const existing = tryOpenState(name);
  if (existing) existing.close();
  else {
    initState({
      name,
      tableSize: DEFAULT_TABLE_SIZE,
      maxTargets: Math.max(DEFAULT_MAX_TARGETS, targets.length),
      ownFwmark: 0,
      hashSeed: 0,
      sctpPortsOnly: true,
      sctpEncapPort: 0,
    });
    created = true;
  }
  try {
    const state = openState(name);
    try {
      state.update((slots) => {
        for (const t of targets) {
          activateTargets(slots, [t.fwmark], t.weight, state.config.maxTargets, {
            allowZero: true,
          });
        }
      });
    } finally {
      state.close();
    }
  } catch (err) {
    if (created) deleteState(name);
    throw err;
  }
  return { created };
}

/** Removes a load balancer's state file, damaged or not. False if there was none. */
export function deleteState(name: string): boolean {
  const path = statePath(name);
  try {
    lstatSync(path);
  } catch {
    return false;
  }
  rmSync(path, { force: true });
  return true;
}

/** What is wrong with a load balancer's state, or undefined when it is fine (or absent). */
export function stateProblem(name: string): string | undefined {
  try {
    const state = tryOpenState(name);
    if (state) {
      try {
        state.snapshot();
      } finally {
        state.close();
      }
    }
    return undefined;
  } catch (err) {
    if (err instanceof StateDamageError) return err.reason;
    throw err;
  }
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

/** The geometry a header announces, if it is one a state file can have. */
function plausibleGeometry(header: Uint32Array): StateGeometry | undefined {
  const tableSize = header[H.tableSize];
  const maxTargets = header[H.maxTargets];
  const sizeOk = tableSize >= MIN_TABLE_SIZE && tableSize <= MAX_TABLE_SIZE && isPrime(tableSize);
  const targetsOk = maxTargets >= 1 && maxTargets <= MAX_MAX_TARGETS;
  return sizeOk && targetsOk ? { tableSize, maxTargets } : undefined;
}

export class StateFile {
  readonly config: LbConfig;
  readonly geometry: StateGeometry;
  /** Header words; the generation and log level are read and written with Atomics. */
  readonly header: Int32Array;
  readonly inode: number;
  /** What the last readBuffer()/audit() that returned READ_DAMAGED found wrong. */
  lastDamage: string | undefined;
  private readonly headerWords: Uint32Array;
  private readonly buffers: [Uint32Array, Uint32Array];
  /** The settings as the header held them at open: every buffer must agree. */
  private readonly expected: number[];
  private fd: number;

  constructor(
    readonly name: string,
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
    const damaged = (reason: string): never => {
      closeSync(fd);
      throw new StateDamageError(name, path, reason);
    };
    const st = fstatSync(fd);
    this.inode = st.ino;
    if (st.size < HEADER_BYTES) damaged(`the file is too small (${st.size} bytes)`);
    const probe = new Uint32Array(HEADER_WORDS);
    readSync(fd, new Uint8Array(probe.buffer), 0, HEADER_BYTES, 0);
    const problem = headerProblem(probe);
    if (problem !== undefined) damaged(problem);
    const geometry = plausibleGeometry(probe) ?? damaged("impossible table size or target count");
    if (st.size !== fileBytes(geometry)) {
      damaged(`its size (${st.size} bytes) does not match its geometry (${fileBytes(geometry)})`);
    }
    this.geometry = geometry;
    const mapping = loadAddon().mmapShared(fd, st.size);
    this.header = new Int32Array(mapping, 0, HEADER_WORDS);
    this.headerWords = new Uint32Array(mapping, 0, HEADER_WORDS);
    const words = bufferWords(geometry);
    this.buffers = [
      new Uint32Array(mapping, bufferOffset(geometry, 0), words),
      new Uint32Array(mapping, bufferOffset(geometry, 1), words),
    ];
    const settings = headerSettings(probe);
    this.expected = settingsWords(settings);
    this.config = { name, ...settings };
  }

  /** The published generation (one atomic load). */
  generation(): number {
    return Atomics.load(this.header, H.generation) >>> 0;
  }

  /** Words of one buffer copy (what readBuffer() fills). */
  bufferWords(): number {
    return bufferWords(this.geometry);
  }

  /**
   * Copies the published buffer into `into` (bufferWords() long, the reader's own) and
   * verifies the copy. Returns the generation copied; READ_BUSY if writers kept publishing
   * during every attempt (try again later); READ_DAMAGED if the header or the copy is
   * damaged (lastDamage says how; `into` then holds garbage). Never throws, never
   * allocates more than the checksums' views: the daemon calls it between batches.
   */
  readBuffer(into: Uint32Array): number {
    for (let attempt = 0; attempt < 8; attempt++) {
      const generation = this.generation();
      into.set(this.buffers[generation & 1]);
      if (this.generation() !== generation) continue;
      const problem =
        headerProblem(this.headerWords, this.expected) ??
        bufferProblem(into, this.geometry, generation, this.expected);
      if (problem !== undefined) {
        this.lastDamage = problem;
        return READ_DAMAGED;
      }
      return generation;
    }
    return READ_BUSY;
  }

  /**
   * Verifies the header and the published buffer in place, without copying: finds damage
   * that did not come with a new generation (a stray write into the table). Same results
   * as readBuffer().
   */
  audit(): number {
    const generation = this.generation();
    const problem =
      headerProblem(this.headerWords, this.expected) ??
      bufferProblem(this.buffers[generation & 1], this.geometry, generation, this.expected);
    if (this.generation() !== generation) return READ_BUSY;
    if (problem !== undefined) {
      this.lastDamage = problem;
      return READ_DAMAGED;
    }
    return generation;
  }

  /** The published state, verified; StateDamageError if it is damaged. */
  snapshot(): Snapshot {
    const copy = new Uint32Array(this.bufferWords());
    const generation = this.readBuffer(copy);
    if (generation === READ_BUSY) throw new StateError(`${this.path} is changing too fast to read`);
    if (generation === READ_DAMAGED) {
      throw new StateDamageError(this.name, this.path, this.lastDamage ?? "unknown damage");
    }
    const start = tableStart(this.geometry);
    return {
      generation,
      targets: decodeTargets(copy, this.geometry),
      table: copy.slice(start, start + this.geometry.tableSize),
      allDownPolicy: decodePolicy(copy),
    };
  }

  /**
   * Changes the targets (and the load balancer's table settings) under an exclusive lock:
   * `change` edits copies, the table is rebuilt (decideTable, then Maglev), written to the
   * inactive buffer and published with one store of the generation. If `change` throws,
   * or the state is damaged, nothing is written.
   */
  update(change: (targets: TargetSlot[], settings: LbTableSettings) => void): Snapshot {
    this.lock();
    try {
      const current = this.snapshot();
      const targets = current.targets.map((t) => ({ ...t }));
      const settings: LbTableSettings = { allDownPolicy: current.allDownPolicy };
      change(targets, settings);
      checkTargets(targets, this.geometry.maxTargets);
      const table = buildTable(targets, settings.allDownPolicy, this.geometry.tableSize);
      const generation = (current.generation + 1) >>> 0;
      encodeBuffer(
        this.buffers[generation & 1],
        this.geometry,
        this.expected,
        generation,
        settings.allDownPolicy,
        targets,
        table,
      );
      Atomics.store(this.header, H.generation, generation | 0);
      targets.sort((a, b) => a.slot - b.slot);
      return { generation, targets, table, allDownPolicy: settings.allDownPolicy };
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
    // A repair or re-init replaced the file while we waited: our change would be lost.
    let replaced = true;
    try {
      replaced = statSync(this.path).ino !== this.inode;
    } catch {
      // removed
    }
    if (replaced) {
      this.unlock();
      throw new StateError(`${this.path} was replaced or removed meanwhile: run the command again`);
    }
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
