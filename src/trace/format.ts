// Trace records as text lines, for tracers without --json. Pure: no I/O.
import { selectionOf } from "./kinds.js";
import type {
  DroppedRecord,
  FlowConfRecord,
  FragRecord,
  LogRecord,
  PacketRecord,
  TargetRecord,
  TraceRecord,
  TupleFields,
} from "./record.js";

/** "tcp 10.0.0.1:1234 -> 10.0.0.2:80 (5-tuple)", with what the hash is based on. */
export function formatTuple(r: Partial<TupleFields>): string {
  const v6 = r.family === 6;
  let text: string;
  if (r.sport === undefined || r.dport === undefined) {
    text = `${r.proto} ${r.src} -> ${r.dst}`;
  } else {
    const s = v6 ? `[${r.src}]` : r.src;
    const d = v6 ? `[${r.dst}]` : r.dst;
    text = `${r.proto} ${s}:${r.sport} -> ${d}:${r.dport}`;
  }
  const notes: string[] = [r.hash ?? "?"];
  if (r.icmpError) {
    notes.push(
      `embedded in ${v6 ? "icmpv6" : "icmp"} error type ${r.icmpError.type} code ${r.icmpError.code}`,
    );
  }
  if (r.sctpEncap) notes.push("sctp over udp");
  if (r.frag) notes.push(`${r.frag} fragment id 0x${(r.fragId ?? 0).toString(16)}`);
  return `${text} (${notes.join(", ")})`;
}

function formatPacket(r: PacketRecord): string {
  let s = `${r.kind} q${r.queue}`;
  if (r.flow !== null) s += ` flow=${r.flow}`;
  s += ` ${formatTuple(r)}`;
  if (r.lb !== null) s += ` lb=${r.lb}`;
  if (r.target !== null) s += ` target=${r.target}`;
  s += r.fwmark === null ? " drop" : ` fwmark=${r.fwmark}`;
  if (r.reason !== null) s += ` (${r.reason})`;
  if (r.traceFlow !== null) s += ` trace-flow=${r.traceFlow}`;
  return s;
}

function formatFrag(r: FragRecord): string {
  if (r.event === "reinjected") return `frag q${r.queue} reinjected ${r.count ?? 0}`;
  let s = `frag q${r.queue} ${r.event} ${formatTuple(r)}`;
  if (r.fwmark !== undefined && r.fwmark !== null) s += ` fwmark=${r.fwmark}`;
  if (r.reason !== undefined) s += ` (${r.reason})`;
  return s;
}

function formatFlowConf(r: FlowConfRecord): string {
  if (r.error !== undefined) return `flow-conf q${r.queue} ${r.set} not applied: ${r.error}`;
  const names = r.names.length > 0 ? `: ${r.names.join(", ")}` : "";
  return `flow-conf q${r.queue} ${r.set} ${r.count}${names}`;
}

function formatTarget(r: TargetRecord): string {
  return `target q${r.queue} lb=${r.lb} generation=${r.generation} active=${r.active} fwmarks=${r.fwmarks.join(",") || "-"}`;
}

function formatLog(r: LogRecord): string {
  return `log ${r.level}: ${r.message}`;
}

function formatDropped(r: DroppedRecord): string {
  if (r.where === "ring") {
    return `${r.count} trace records dropped in queue ${r.queue ?? "?"} (trace ring full)`;
  }
  return `${r.count} trace lines dropped`;
}

/** One text line (no newline) for a record. */
export function formatRecord(r: TraceRecord): string {
  switch (r.kind) {
    case "packet":
    case "sctp":
      return formatPacket(r as PacketRecord);
    case "frag":
      return formatFrag(r as FragRecord);
    case "flow-conf":
      return formatFlowConf(r as FlowConfRecord);
    case "target":
      return formatTarget(r as TargetRecord);
    case "log":
      return formatLog(r as LogRecord);
    case "dropped":
      return formatDropped(r as DroppedRecord);
    default:
      return JSON.stringify(r);
  }
}

/** The text line for a record's JSON; a record that does not parse is shown as it is. */
export function formatRecordJson(json: string): string {
  try {
    return formatRecord(JSON.parse(json) as TraceRecord);
  } catch {
    return json;
  }
}

/** "log,packet" for a mask. */
export function describeMask(mask: number): string {
  return selectionOf(mask).join(",");
}
