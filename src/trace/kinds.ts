// What a tracer can select: one bit per kind of trace record. The daemon's trace mask
// (one shared word the workers load once per batch) is the union of the attached
// tracers' selections. Pure: no I/O.

export const TRACE_KINDS = ["log", "packet", "frag", "flow-conf", "sctp", "target"] as const;
export type TraceKind = (typeof TRACE_KINDS)[number];

/** Kind number = bit position; also the kind byte of a ring record. */
export const Kind = {
  log: 0,
  packet: 1,
  frag: 2,
  flowConf: 3,
  sctp: 4,
  target: 5,
} as const;

export const TraceBit = {
  log: 1 << Kind.log,
  packet: 1 << Kind.packet,
  frag: 1 << Kind.frag,
  flowConf: 1 << Kind.flowConf,
  sctp: 1 << Kind.sctp,
  target: 1 << Kind.target,
} as const;

export const ALL_TRACE_BITS = (1 << TRACE_KINDS.length) - 1;

/** Kinds a worker writes per packet, through its ring. */
export const PER_PACKET_BITS = TraceBit.packet | TraceBit.frag | TraceBit.sctp;

export class SelectionError extends Error {
  override name = "SelectionError";
}

export function kindBit(kind: TraceKind): number {
  return 1 << TRACE_KINDS.indexOf(kind);
}

export function kindName(kind: number): TraceKind | undefined {
  return TRACE_KINDS[kind];
}

/** "log,packet" or ["log", "packet"] -> mask. Throws SelectionError on an unknown or empty one. */
export function parseSelection(selection: string | readonly string[]): number {
  const items = typeof selection === "string" ? selection.split(",") : selection;
  if (items.length === 0) throw new SelectionError("empty selection");
  let mask = 0;
  for (const raw of items) {
    if (typeof raw !== "string") throw new SelectionError("selection items must be strings");
    const item = raw.trim();
    const i = TRACE_KINDS.indexOf(item as TraceKind);
    if (i < 0) {
      throw new SelectionError(
        `unknown trace selection "${item}": expected ${TRACE_KINDS.join(", ")}`,
      );
    }
    mask |= 1 << i;
  }
  return mask;
}

/** "0x3", "3" or 3 -> mask. Throws SelectionError unless 1..ALL_TRACE_BITS. */
export function parseMask(value: string | number): number {
  let n: number;
  if (typeof value === "number") n = value;
  else {
    const text = value.trim();
    n = /^(0x[0-9a-fA-F]+|[0-9]+)$/.test(text) ? Number(text) : Number.NaN;
  }
  if (!Number.isInteger(n) || n <= 0 || (n & ~ALL_TRACE_BITS) !== 0) {
    throw new SelectionError(
      `invalid trace mask "${value}": expected 0x1..0x${ALL_TRACE_BITS.toString(16)} (${TRACE_KINDS.map((k, i) => `${k}=0x${(1 << i).toString(16)}`).join(", ")})`,
    );
  }
  return n;
}

/** mask -> ["log", "packet"], in TRACE_KINDS order. */
export function selectionOf(mask: number): TraceKind[] {
  return TRACE_KINDS.filter((_, i) => (mask & (1 << i)) !== 0);
}
