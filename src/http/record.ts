// A running endpoint leaves its address in a small file, so `nflb dashboard-url` prints
// the URL of the endpoint that actually runs (its port, its address) without parsing the
// service's configuration. No secret in it: the token stays in its own 0600 file.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { endpointRecordPath } from "../paths.js";

export interface EndpointRecord {
  version: 1;
  /** "http://127.0.0.1:9473" */
  origin: string;
  host: string;
  port: number;
  tokenRequired: boolean;
  pid: number;
}

export function writeEndpointRecord(rec: EndpointRecord, path = endpointRecordPath()): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(rec)}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** The record, if one exists and its process still runs. */
export function readEndpointRecord(path = endpointRecordPath()): EndpointRecord | undefined {
  let rec: EndpointRecord;
  try {
    rec = JSON.parse(readFileSync(path, "utf8")) as EndpointRecord;
  } catch {
    return undefined;
  }
  if (rec.version !== 1 || typeof rec.origin !== "string" || !processAlive(rec.pid)) {
    return undefined;
  }
  return rec;
}

export function removeEndpointRecord(path = endpointRecordPath(), pid = process.pid): void {
  // Only our own: a newer endpoint may have replaced it.
  try {
    const rec = JSON.parse(readFileSync(path, "utf8")) as EndpointRecord;
    if (rec.pid !== pid) return;
  } catch {
    return;
  }
  rmSync(path, { force: true });
}

function processAlive(pid: unknown): boolean {
  if (typeof pid !== "number" || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
