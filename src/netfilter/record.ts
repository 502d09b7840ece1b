// The record of what a setup applied, so that teardown works without the original
// arguments and after the daemon restarts. /run is shared by all network namespaces, so
// records live in a directory per namespace, named after the inode of its nsfs file.
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  builtinOwnershipPath,
  netnsDir,
  netnsIdentity,
  netnsLockPath,
  setupRecordPath as recordPath,
  SETUP_RECORD_SUFFIX,
} from "../paths.js";
import type { Plan } from "./render.js";
import { SetupError, type SetupSpec } from "./types.js";
import { NAME_PATTERN } from "./validate.js";

export interface SetupRecord {
  version: 1;
  name: string;
  netns: { inode: number; dev: number };
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
}

export { netnsIdentity };

function writeAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
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
  // Same inode on another device would be another namespace filesystem: not ours.
  if (rec.version !== 1 || rec.netns?.inode !== id.inode || rec.netns?.dev !== id.dev) {
    return undefined;
  }
  return rec;
}

export function writeRecord(rec: SetupRecord): void {
  writeAtomic(recordPath(rec.name), `${JSON.stringify(rec, null, 2)}\n`);
}

export function removeRecord(name: string): void {
  rmSync(recordPath(name), { force: true });
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
  return { chains: o?.chains ?? [], tables: o?.tables ?? [] };
}

export function writeOwnership(o: BuiltinOwnership): void {
  const path = builtinOwnershipPath();
  if (o.chains.length === 0 && o.tables.length === 0) rmSync(path, { force: true });
  else writeAtomic(path, `${JSON.stringify(o, null, 2)}\n`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Serialises setups and teardowns of one network namespace (they share the builtin
 * chains and the ownership file). A lock left by a dead process is taken over.
 */
export async function withNetnsLock<T>(fn: () => T | Promise<T>, timeoutMs = 15_000): Promise<T> {
  const dir = netnsDir();
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const lock = netnsLockPath();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(lock, "wx", 0o644);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        // Another process removed the (empty) directory just now.
        mkdirSync(dir, { recursive: true, mode: 0o755 });
        continue;
      }
      if (code !== "EEXIST") throw err;
      let owner = Number.NaN;
      try {
        owner = Number(readFileSync(lock, "utf8"));
      } catch {
        continue; // released meanwhile
      }
      if (Number.isInteger(owner) && owner > 0 && !alive(owner)) {
        try {
          unlinkSync(lock);
        } catch {
          // someone else took it over first
        }
        continue;
      }
      if (Date.now() > deadline) {
        throw new SetupError(`another nflb setup/teardown (pid ${owner}) holds ${lock}`);
      }
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
    try {
      rmdirSync(dir); // only when no record is left: test namespaces come and go
    } catch {
      // not empty
    }
  }
}
