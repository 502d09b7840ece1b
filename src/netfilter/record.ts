// The record of what a setup applied, so that teardown works without the original
// arguments and after the daemon restarts. /run is shared by all network namespaces, so
// records live in a directory per namespace, named after the inode of its nsfs file.
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { LOCK_EX, LOCK_NB, LOCK_UN, loadAddon } from "../native/addon.js";
import {
  builtinOwnershipPath,
  netnsDir,
  netnsIdentity,
  netnsLockPath,
  setupRecordPath as recordPath,
  SETUP_RECORD_SUFFIX,
} from "../paths.js";
import { operation } from "./faults.js";
import type { Plan } from "./render.js";
import { SetupError, type SetupSpec } from "./types.js";
import { NAME_PATTERN } from "./validate.js";

export interface SetupRecord {
  version: 1;
  name: string;
  /**
   * The namespace the record is of. The directory is named after the inode, which a later
   * namespace may get once this one is gone; the cookie (absent in records of older
   * versions, or where the kernel has none) tells them apart.
   */
  netns: NetnsId;
  /** applying: a setup was under way (or crashed); failed: a rollback/teardown was incomplete. */
  state: "applying" | "applied" | "failed";
  spec: SetupSpec;
  /** plans[0] is current; while applying, older ones are kept so teardown removes all. */
  plans: Plan[];
  updatedAt: string;
}

/** Builtin iptables-nft chains/tables that nflb created in this namespace (and may remove). */
export interface BuiltinOwnership {
  chains: { family: "ip" | "ip6"; table: string; chain: string }[];
  tables: { family: "ip" | "ip6"; table: string }[];
  /** The cookie of the namespace the claims are about (see SetupRecord.netns). */
  netnsCookie?: string;
}

export interface NetnsId {
  inode: number;
  dev: number;
  cookie?: string;
}

let cookie: { value: string | undefined } | undefined;

/** This namespace's cookie, or undefined on a kernel without SO_NETNS_COOKIE (< 5.14). */
function netnsCookie(): string | undefined {
  // A process stays in its namespace (setns is not used): one query is enough.
  if (!cookie) {
    try {
      cookie = { value: loadAddon().netnsCookie() };
    } catch {
      cookie = { value: undefined };
    }
  }
  return cookie.value;
}

/** This network namespace: inode and device of its nsfs file, and its cookie. */
export function netnsId(): NetnsId {
  const c = netnsCookie();
  return { ...netnsIdentity(), ...(c ? { cookie: c } : {}) };
}

/** Whether a file's recorded cookie says it is of a namespace that is gone. */
function ofDeadNamespace(recorded: string | undefined): boolean {
  const current = netnsCookie();
  return recorded !== undefined && current !== undefined && recorded !== current;
}

const TMP_MARK = ".tmp-";

function writeAtomic(path: string, text: string): void {
  operation(`write ${basename(path)}`, () => {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    const tmp = `${path}${TMP_MARK}${process.pid}`;
    const fd = openSync(tmp, "w", 0o644);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  });
}

function removeFile(path: string): void {
  operation(`remove ${basename(path)}`, () => rmSync(path, { force: true }));
}

function readJson<T>(path: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new SetupError(`${path} is corrupt; remove it and the rules by hand`);
  }
}

export function readRecord(name: string): SetupRecord | undefined {
  const rec = readJson<SetupRecord>(recordPath(name));
  if (!rec) return undefined;
  const id = netnsIdentity();
  // Same inode on another device would be another namespace filesystem: not ours; the
  // same inode with another cookie, a namespace that is gone.
  if (rec.version !== 1 || rec.netns?.inode !== id.inode || rec.netns?.dev !== id.dev) {
    return undefined;
  }
  return ofDeadNamespace(rec.netns.cookie) ? undefined : rec;
}

export function writeRecord(rec: SetupRecord): void {
  writeAtomic(recordPath(rec.name), `${JSON.stringify(rec, null, 2)}\n`);
}

export function removeRecord(name: string): void {
  removeFile(recordPath(name));
}

/** Names with a record in this network namespace. */
export function listRecords(): string[] {
  try {
    return readdirSync(netnsDir())
      .filter((f) => f.endsWith(SETUP_RECORD_SUFFIX))
      .map((f) => f.slice(0, -SETUP_RECORD_SUFFIX.length))
      .filter((n) => NAME_PATTERN.test(n))
      .sort();
  } catch {
    return [];
  }
}

export function readOwnership(): BuiltinOwnership {
  const o = readJson<BuiltinOwnership>(builtinOwnershipPath());
  if (!o || ofDeadNamespace(o.netnsCookie)) return { chains: [], tables: [] };
  return { chains: o.chains ?? [], tables: o.tables ?? [] };
}

export function writeOwnership(o: BuiltinOwnership): void {
  const path = builtinOwnershipPath();
  if (o.chains.length === 0 && o.tables.length === 0) removeFile(path);
  else {
    const c = netnsCookie();
    const text = JSON.stringify(
      { chains: o.chains, tables: o.tables, ...(c ? { netnsCookie: c } : {}) },
      null,
      2,
    );
    writeAtomic(path, `${text}\n`);
  }
}

/** Whether the open file `fd` is still the file at `path` (not removed or replaced). */
function stillAt(fd: number, path: string): boolean {
  try {
    return statSync(path).ino === fstatSync(fd).ino;
  } catch {
    return false;
  }
}

/**
 * What processes left that died while holding the lock (all writes hold it): half-written
 * files; and the records and builtin claims of a namespace that is gone, whose directory
 * this one inherited with its inode.
 */
function removeLeftovers(dir: string): void {
  for (const f of readdirSync(dir)) {
    const path = join(dir, f);
    if (f.includes(TMP_MARK)) rmSync(path, { force: true });
    else if (f.endsWith(SETUP_RECORD_SUFFIX) || path === builtinOwnershipPath()) {
      let recorded: string | undefined;
      try {
        const o = JSON.parse(readFileSync(path, "utf8")) as Partial<SetupRecord & BuiltinOwnership>;
        recorded = o.netns?.cookie ?? o.netnsCookie;
      } catch {
        continue; // unreadable: readRecord reports it
      }
      if (ofDeadNamespace(recorded)) rmSync(path, { force: true });
    }
  }
}

/**
 * Serialises setups and teardowns of one network namespace (they share the builtin
 * chains and the ownership file). An flock: the kernel releases it when its holder dies,
 * however it dies. The lock file (and the directory, once empty) goes when released, so
 * namespaces that come and go leave nothing under /run; a waiter that then holds a lock on
 * the removed file notices and locks the new one.
 */
export async function withNetnsLock<T>(fn: () => T | Promise<T>, timeoutMs = 15_000): Promise<T> {
  const addon = loadAddon();
  const dir = netnsDir();
  const lock = netnsLockPath();
  const deadline = Date.now() + timeoutMs;
  let fd: number;
  for (;;) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    try {
      fd = openSync(lock, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (err) {
      // Another process removed the (empty) directory just now.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    const rc = addon.flock(fd, LOCK_EX | LOCK_NB);
    if (rc === 0 && stillAt(fd, lock)) break;
    if (rc === 0) addon.flock(fd, LOCK_UN);
    closeSync(fd);
    if (rc === 0) continue;
    if (rc !== -addon.errno.EWOULDBLOCK && rc !== -addon.errno.EINTR) {
      throw new SetupError(`cannot lock ${lock}: ${addon.strerror(rc)}`);
    }
    if (Date.now() > deadline) {
      let owner = "";
      try {
        owner = readFileSync(lock, "utf8").trim();
      } catch {
        // released meanwhile
      }
      throw new SetupError(
        `another nflb setup/teardown${owner ? ` (pid ${owner})` : ""} holds ${lock}`,
      );
    }
    await sleep(50);
  }
  try {
    // For the message of a waiting process only.
    ftruncateSync(fd, 0);
    writeSync(fd, String(process.pid), 0);
    removeLeftovers(dir);
    return await fn();
  } finally {
    rmSync(lock, { force: true });
    closeSync(fd);
    try {
      rmdirSync(dir); // only when no record is left: test namespaces come and go
    } catch {
      // not empty
    }
  }
}
