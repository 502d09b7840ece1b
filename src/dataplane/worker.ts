// The worker_threads glue of one queue: its own netlink socket, its own QueueWorker
// (tables, decision, counters, traces). Data flows one way: socket -> batch -> classify
// -> decide -> verdicts. Importing this file outside a worker thread throws; tests use
// QueueWorker directly.
import { parentPort, workerData } from "node:worker_threads";
import { NfQueue } from "../nfqueue/queue.js";
import type { FlowsMessage } from "./flowfeed.js";
import { QueueWorker, type WorkerConfig, type WorkerMessage } from "./queueworker.js";

export type { WorkerConfig, WorkerMessage } from "./queueworker.js";

const port = parentPort;
if (!port) throw new Error("worker.ts runs only as a worker_thread");
const config = workerData as WorkerConfig;
const post = (message: WorkerMessage) => port.postMessage(message);

let worker: QueueWorker;
let queue: NfQueue;
try {
  worker = new QueueWorker(config, post);
  queue = NfQueue.open(config.queue);
} catch (err) {
  post({ type: "error", queue: config.queue.queue, message: (err as Error).message });
  process.exit(1);
}

const timer = setInterval(() => worker.housekeeping(queue.stats), 1000);
queue.start(worker.onBatch);
post({ type: "ready", queue: config.queue.queue });

// Messages arrive between two poll callbacks, i.e. between batches: flows are swapped there.
port.on("message", (message: FlowsMessage | { type: "stop" }) => {
  if (message.type === "flows") {
    if (message.set === "flows") worker.applyFlows(message.compiled);
    else worker.applyTraceFlows(message.compiled);
    return;
  }
  clearInterval(timer);
  // Packets already queued get their verdicts before the socket goes away.
  queue.drain(worker.onBatch);
  queue.close();
  worker.housekeeping(queue.stats);
  worker.close();
  post({ type: "stopped", queue: config.queue.queue });
  port.close();
});
