// Trace records as the daemon produces them: one JSON object per record, the line a
// `--json` tracer receives as it is (text tracers get it formatted by format.ts).
// Workers build them only for packets and events a tracer selected. Pure: no I/O (the
// caller passes the time).
import { FragKind, formatAddress, HashMode, type PacketInfo, protoName } from "../packet/info.js";
import type { TraceKind } from "./kinds.js";

export const HASH_MODE_NAMES = ["5-tuple", "addresses", "ports"] as const;
const FRAG_NAMES = ["none", "first", "later"] as const;

/** What the daemon did with a packet, as a packet/sctp record tells it. */
export interface PacketDecision {
  /** The trace flow that selected it (packet records), null otherwise. */
  traceFlow: string | null;
  /** The matched (service) flow, null when no flows are defined. */
  flow: string | null;
  /** The load balancer whose table was used, null when no flow matched. */
  lb: string | null;
  /** The target (fwmark) Maglev picked, -1 when none. */
  target: number;
  /** The verdict's fwmark, -1 for a drop. */
  fwmark: number;
  /** Why the verdict is not the target's plain accept ("no-flow", "no-target", ...). */
  reason: string | null;
}

/** Fields of every trace record. */
export interface BaseRecord {
  /** Milliseconds since the epoch. */
  ts: number;
  kind: TraceKind | "dropped";
  /** The daemon queue (worker) it came from; absent for the main thread's records. */
  queue?: number;
}

/** The 5-tuple fields of packet, sctp and frag records. */
export interface TupleFields {
  family: 4 | 6;
  proto: string;
  src: string;
  dst: string;
  /** Absent when the hash uses addresses only (no ports). */
  sport?: number;
  dport?: number;
  hash: (typeof HASH_MODE_NAMES)[number];
  /** The tuple is the one quoted by this ICMP error (the hash is the quoted flow's). */
  icmpError?: { type: number; code: number };
  sctpEncap?: boolean;
  frag?: "first" | "later";
  fragId?: number;
}

export interface PacketRecord extends BaseRecord, TupleFields {
  kind: "packet" | "sctp";
  queue: number;
  traceFlow: string | null;
  flow: string | null;
  lb: string | null;
  target: number | null;
  fwmark: number | null;
  verdict: "accept" | "drop";
  reason: string | null;
}

export type FragEvent = "first" | "forward" | "held" | "dropped" | "tier" | "reinjected";

/** The frag record's event for each fragment-table outcome (indexed by FragOutcome). */
export const FRAG_EVENT_OF_OUTCOME: readonly FragEvent[] = [
  "forward",
  "held",
  "dropped",
  "dropped",
  "dropped",
  "dropped",
  "first",
  "first",
  "first",
  "first",
  "first",
];

/** The frag record's reason for each fragment-table outcome (indexed by FragOutcome). */
export const FRAG_REASON_OF_OUTCOME: readonly (string | null)[] = [
  null,
  null,
  "pool-full",
  "too-big",
  "table-full",
  "poisoned",
  null,
  null,
  "duplicate",
  "poisoned",
  "untracked",
];

/** The reason of a fragment dropped because the queue copied only part of it. */
export const FRAG_TRUNCATED_REASON = "truncated-copy";

export interface FragRecord extends BaseRecord, Partial<TupleFields> {
  kind: "frag";
  queue: number;
  event: FragEvent;
  fwmark?: number | null;
  reason?: string;
  /** reinjected: how many held fragments went back through the TUN device. */
  count?: number;
}

export interface FlowConfRecord extends BaseRecord {
  kind: "flow-conf";
  queue: number;
  set: "flows" | "trace-flows";
  count: number;
  names: string[];
  error?: string;
}

export interface TargetRecord extends BaseRecord {
  kind: "target";
  queue: number;
  lb: string;
  generation: number;
  active: number;
  fwmarks: number[];
}

export interface LogRecord extends BaseRecord {
  kind: "log";
  level: string;
  message: string;
}

export interface DroppedRecord extends BaseRecord {
  kind: "dropped";
  count: number;
  /** "tracer": lines this tracer's socket could not take; "ring": a worker's ring was full. */
  where: "tracer" | "ring";
}

export type TraceRecord =
  | PacketRecord
  | FragRecord
  | FlowConfRecord
  | TargetRecord
  | LogRecord
  | DroppedRecord;

const str = JSON.stringify;

/** The tuple fields of a classified packet, as JSON members (no braces, leading comma). */
export function tupleJson(info: PacketInfo): string {
  const family = info.family === 6 ? 6 : 4;
  let s = `,"family":${family},"proto":"${protoName(info.proto)}","src":"${formatAddress(family, info.src)}","dst":"${formatAddress(family, info.dst)}"`;
  if (info.hashMode !== HashMode.Addresses) s += `,"sport":${info.sport},"dport":${info.dport}`;
  s += `,"hash":"${HASH_MODE_NAMES[info.hashMode]}"`;
  if (info.icmpError) s += `,"icmpError":{"type":${info.icmpType},"code":${info.icmpCode}}`;
  if (info.sctpEncap) s += `,"sctpEncap":true`;
  if (info.fragKind !== FragKind.None) {
    s += `,"frag":"${FRAG_NAMES[info.fragKind]}","fragId":${info.fragId >>> 0}`;
  }
  return s;
}

/** A packet (or sctp) record: the packet's tuple and what the daemon did with it. */
export function packetJson(
  kind: "packet" | "sctp",
  ts: number,
  queue: number,
  info: PacketInfo,
  d: PacketDecision,
): string {
  return `{"ts":${ts},"kind":"${kind}","queue":${queue}${tupleJson(info)},"traceFlow":${str(d.traceFlow)},"flow":${str(d.flow)},"lb":${str(d.lb)},"target":${d.target < 0 ? null : d.target},"fwmark":${d.fwmark < 0 ? null : d.fwmark},"verdict":"${d.fwmark < 0 ? "drop" : "accept"}","reason":${str(d.reason)}}`;
}

/** A fragment record for a classified fragment. */
export function fragJson(
  ts: number,
  queue: number,
  info: PacketInfo,
  event: FragEvent,
  fwmark: number,
  reason: string | null,
): string {
  let s = `{"ts":${ts},"kind":"frag","queue":${queue},"event":"${event}"${tupleJson(info)},"fwmark":${fwmark < 0 ? null : fwmark}`;
  if (reason !== null) s += `,"reason":${str(reason)}`;
  return `${s}}`;
}

/** Held fragments written back through the TUN device. */
export function reinjectedJson(ts: number, queue: number, count: number): string {
  return `{"ts":${ts},"kind":"frag","queue":${queue},"event":"reinjected","count":${count}}`;
}

export function flowConfJson(
  ts: number,
  queue: number,
  set: "flows" | "trace-flows",
  names: readonly string[],
  error?: string,
): string {
  const r: FlowConfRecord = {
    ts,
    kind: "flow-conf",
    queue,
    set,
    count: names.length,
    names: [...names],
  };
  if (error !== undefined) r.error = error;
  return str(r);
}

export function targetJson(
  ts: number,
  queue: number,
  lb: string,
  generation: number,
  active: number,
  fwmarks: readonly number[],
): string {
  const r: TargetRecord = {
    ts,
    kind: "target",
    queue,
    lb,
    generation,
    active,
    fwmarks: [...fwmarks],
  };
  return str(r);
}

export function logJson(ts: number, level: string, message: string): string {
  const r: LogRecord = { ts, kind: "log", level, message };
  return str(r);
}

export function droppedJson(
  ts: number,
  count: number,
  where: "tracer" | "ring",
  queue?: number,
): string {
  const r: DroppedRecord = { ts, kind: "dropped", count, where };
  if (queue !== undefined) r.queue = queue;
  return str(r);
}
