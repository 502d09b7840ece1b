// /proc/net/netfilter/nfnetlink_queue: one line per bound queue of the reader's network
// namespace. Column order from net/netfilter/nfnetlink_queue.c seq_show():
//   "%5u %6u %5u %1u %5u %5u %5u %8u %2d\n" queue_num, peer_portid, queue_total,
//   copy_mode, copy_range, queue_dropped, queue_user_dropped, id_sequence, 1
import { readFileSync } from "node:fs";

export const PROC_NFQUEUE = "/proc/net/netfilter/nfnetlink_queue";

export interface QueueProcStats {
  queue: number;
  /** Netlink port id of the bound socket. */
  portId: number;
  /** Packets waiting for a verdict now. */
  queueTotal: number;
  /** NFQNL_COPY_NONE 0, META 1, PACKET 2. */
  copyMode: number;
  copyRange: number;
  /** Dropped because the queue was full (queue-maxlen). */
  queueDropped: number;
  /** Dropped because the netlink socket's receive buffer was full. */
  userDropped: number;
  /** Last packet id handed out. */
  idSequence: number;
}

/** Parses the file's text; lines that do not have the expected columns are skipped. */
export function parseQueueProcStats(text: string): QueueProcStats[] {
  const out: QueueProcStats[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const n = f.slice(0, 8).map(Number);
    if (n.some((x) => !Number.isInteger(x))) continue;
    out.push({
      queue: n[0],
      // Autobound netlink port ids are negative as s32; kernels before 3.x printed "%d".
      portId: n[1] >>> 0,
      queueTotal: n[2],
      copyMode: n[3],
      copyRange: n[4],
      queueDropped: n[5],
      userDropped: n[6],
      idSequence: n[7],
    });
  }
  return out;
}

/** Queues of the calling process's network namespace; [] when the file does not exist
 * (nfnetlink_queue not loaded, or no /proc). */
export function readQueueProcStats(path = PROC_NFQUEUE): QueueProcStats[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT" || code === "ENOTDIR") return [];
    throw err;
  }
  return parseQueueProcStats(text);
}
