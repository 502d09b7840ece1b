// The control protocol of the daemon's endpoint: newline-delimited JSON. A client sends
// one request per line; the daemon answers each with one JSON line, {"ok":true,...} or
// {"ok":false,"error":"..."}. After the answer to a "trace" request the connection is a
// stream of trace lines (text, or JSON objects with "json": true) until either side
// closes it; the daemon ignores anything else the client sends then.
//
//   {"op":"ping"}                                   -> {"ok":true,"op":"ping","name":..,"pid":..,"queues":[..]}
//   {"op":"status"}                                 -> {"ok":true,"op":"status",..., "tracers":[..],"rings":[..]}
//   {"op":"trace","selection":["packet","log"],"json":true}
//   {"op":"trace","mask":"0x3"}                      -> {"ok":true,"op":"trace","mask":3,"selection":[..],"json":false}
//
// "selection" (names, or one comma-separated string) and "mask" (number, or "0x..")
// exclude each other; neither means ["log"]. Pure: no I/O.
import { parseMask, parseSelection, SelectionError, selectionOf, TraceBit } from "./kinds.js";

/** Longest request line the daemon reads. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export type ControlRequest =
  | { op: "ping" }
  | { op: "status" }
  | { op: "trace"; mask: number; json: boolean };

export class RequestError extends Error {
  override name = "RequestError";
}

const KEYS: Record<ControlRequest["op"], readonly string[]> = {
  ping: ["op"],
  status: ["op"],
  trace: ["op", "selection", "mask", "json"],
};

/** Parses one request line. Throws RequestError with a message fit for the client. */
export function parseRequest(line: string): ControlRequest {
  if (line.length > MAX_REQUEST_BYTES) throw new RequestError("request too long");
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new RequestError("request is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RequestError("request must be a JSON object");
  }
  const r = value as Record<string, unknown>;
  const op = r.op;
  if (typeof op !== "string" || !Object.hasOwn(KEYS, op)) {
    throw new RequestError(`unknown op ${JSON.stringify(op)}: expected ping, status or trace`);
  }
  const allowed = KEYS[op as ControlRequest["op"]];
  for (const key of Object.keys(r)) {
    if (!allowed.includes(key)) throw new RequestError(`unknown field "${key}" for op ${op}`);
  }
  if (op === "ping" || op === "status") return { op };
  if (r.json !== undefined && typeof r.json !== "boolean") {
    throw new RequestError(`"json" must be true or false`);
  }
  if (r.selection !== undefined && r.mask !== undefined) {
    throw new RequestError(`give "selection" or "mask", not both`);
  }
  let mask: number = TraceBit.log;
  try {
    if (r.selection !== undefined) {
      if (typeof r.selection !== "string" && !Array.isArray(r.selection)) {
        throw new RequestError(`"selection" must be a list of names or a comma-separated string`);
      }
      mask = parseSelection(r.selection as string | string[]);
    } else if (r.mask !== undefined) {
      if (typeof r.mask !== "string" && typeof r.mask !== "number") {
        throw new RequestError(`"mask" must be a number or a "0x..." string`);
      }
      mask = parseMask(r.mask);
    }
  } catch (err) {
    if (err instanceof SelectionError) throw new RequestError(err.message);
    throw err;
  }
  return { op: "trace", mask, json: r.json === true };
}

/** The request line `nflb trace` sends. */
export function traceRequestLine(mask: number, json: boolean): string {
  return `${JSON.stringify({ op: "trace", selection: selectionOf(mask), json })}\n`;
}

export function errorLine(message: string): string {
  return `${JSON.stringify({ ok: false, error: message })}\n`;
}
