// Flow sets of this host's daemons: "flows" (which load balancer serves what) and
// "trace-flows" (which packets the packet trace prints). Each is one JSON file in the
// state directory, replaced
// atomically (write a temporary file, rename) under an exclusive lock, so writers never
// lose each other's changes and the daemon never reads half a change. A daemon restart
// finds the flows where they were.
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { checkFlowSpec, FlowError, FlowMatcher, type FlowSpec } from "../flows/index.js";
import { LOCK_EX, LOCK_UN, loadAddon } from "../native/addon.js";
import { type FlowFileSet, flowsLockPath, flowsPath, stateDir } from "../paths.js";

export type FlowSet = FlowFileSet;

/** The stored flows, in matcher order; [] when there are none. Throws on a damaged file. */
export function readFlows(set: FlowSet = "flows"): FlowSpec[] {
  let text: string;
  try {
    text = readFileSync(flowsPath(set), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new FlowError(`${flowsPath(set)} is not valid JSON: damaged flow file`);
  }
  if (!Array.isArray(parsed)) throw new FlowError(`${flowsPath(set)} holds no flow list`);
  return parsed.map((f) => checkFlowSpec(f));
}

/** An identity of the flow file's current version, cheap to compare (inode and mtime). */
export function flowsVersion(set: FlowSet = "flows"): string {
  try {
    const st = statSync(flowsPath(set));
    return `${st.ino}:${st.mtimeMs}:${st.size}`;
  } catch {
    return "none";
  }
}

/**
 * Changes the flows under an exclusive lock. `change` edits a copy; the result is
 * compiled (which checks it: duplicate names, invalid flows) before it replaces the
 * file, so a rejected change leaves everything as it was.
 */
export function updateFlows(
  change: (flows: FlowSpec[]) => FlowSpec[],
  set: FlowSet = "flows",
): FlowSpec[] {
  mkdirSync(stateDir(), { recursive: true, mode: 0o755 });
  const addon = loadAddon();
  const lockFd = openSync(flowsLockPath(set), "a", 0o644);
  try {
    const rc = addon.flock(lockFd, LOCK_EX);
    if (rc < 0) throw new FlowError(`cannot lock the flows: ${addon.strerror(rc)}`);
    const next = change(readFlows(set));
    const ordered = new FlowMatcher(next).flows.slice();
    const tmp = `${flowsPath(set)}.tmp.${process.pid}`;
    writeFileSync(tmp, `${JSON.stringify(ordered, null, 2)}\n`, { mode: 0o644 });
    renameSync(tmp, flowsPath(set));
    addon.flock(lockFd, LOCK_UN);
    return ordered;
  } finally {
    closeSync(lockFd);
  }
}
