// NFQUEUE numbers: one queue ("2") or a range ("0:3") served by one worker per queue.
import { DomainError } from "./errors.js";

export const MAX_QUEUE = 65535;
/** One worker thread (and socket) per queue: more would not fit a host's cores anyway. */
export const MAX_QUEUES = 64;

/** first === last: one queue; else NFQUEUE --queue-balance first:last. */
export interface QueueRange {
  first: number;
  last: number;
}

/** "2" or "0:3" -> { first, last }; DomainError otherwise. */
export function parseQueueRange(text: string): QueueRange {
  const match = /^(\d+)(?::(\d+))?$/.exec(text.trim());
  if (!match) throw new DomainError(`invalid queue "${text}": expected N or FIRST:LAST`);
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (first > MAX_QUEUE || last > MAX_QUEUE || last < first) {
    throw new DomainError(`invalid queue "${text}": numbers 0..${MAX_QUEUE}, FIRST <= LAST`);
  }
  if (last - first >= MAX_QUEUES) {
    throw new DomainError(`invalid queue "${text}": at most ${MAX_QUEUES} queues`);
  }
  return { first, last };
}

/** The queue numbers of a range, in order. */
export function queueNumbers(range: QueueRange): number[] {
  const queues: number[] = [];
  for (let q = range.first; q <= range.last; q++) queues.push(q);
  return queues;
}

/** One queue number 0..65535 (e.g. a fragment queue); DomainError otherwise. */
export function parseQueue(text: string): number {
  const t = text.trim();
  const n = /^\d{1,5}$/.test(t) ? Number(t) : Number.NaN;
  if (!(n <= MAX_QUEUE)) throw new DomainError(`invalid queue "${text}": a number 0..${MAX_QUEUE}`);
  return n;
}
