// `nflb lb`: starts one worker per queue, relays their logs, stops them cleanly on
// SIGTERM/SIGINT (each drains its socket so queued packets get verdicts).
import { Worker } from "node:worker_threads";
import { LEVEL_VALUE, type Logger } from "../log/logger.js";
import { NFQ_MAX_COPY_RANGE } from "../nfqueue/constants.js";
import type { QueueOptions } from "../nfqueue/queue.js";
import { openState } from "../state/store.js";
import type { FragmentOptions } from "./fraghandler.js";
import type { WorkerConfig, WorkerMessage } from "./worker.js";

export interface DaemonOptions {
  name: string;
  queues: number[];
  queue: Omit<QueueOptions, "queue">;
  notargetsFwmark: number;
  acceptInvalid: boolean;
  nolbFwmark: number;
  promiscuousPing: boolean;
  /** The fragment queue: its worker copies whole packets and tracks fragments. */
  fragments?: FragmentOptions & { queue: number };
  /** Name of the load-balancer tier's state (see WorkerConfig.tier). */
  tier?: string;
}

const STOP_TIMEOUT_MS = 5000;

/** Parses "2" or "0:3" into queue numbers. */
export function parseQueueRange(text: string): number[] {
  const match = /^(\d+)(?::(\d+))?$/.exec(text.trim());
  if (!match) throw new Error(`invalid queue "${text}": expected N or FIRST:LAST`);
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (first > 65535 || last > 65535 || last < first) {
    throw new Error(`invalid queue "${text}": numbers 0..65535, FIRST <= LAST`);
  }
  if (last - first >= 64) throw new Error(`invalid queue "${text}": at most 64 queues`);
  const queues: number[] = [];
  for (let q = first; q <= last; q++) queues.push(q);
  return queues;
}

/** Runs until a signal stops it; resolves with the process exit code. */
export async function runDaemon(options: DaemonOptions, log: Logger): Promise<number> {
  // Fail before starting any worker if the load balancer does not exist.
  const state = openState(options.name);
  const { tableSize, maxTargets, ownFwmark } = state.config;
  state.close();
  if (options.tier !== undefined) {
    if (ownFwmark === 0) {
      throw new Error(
        `--tier needs this instance's own fwmark: nflb init --name ${options.name} --ownfw FWMARK`,
      );
    }
    const tierState = openState(options.tier);
    const listed = tierState.snapshot().targets.some((t) => t.fwmark === ownFwmark);
    tierState.close();
    if (!listed) {
      throw new Error(
        `own fwmark ${ownFwmark} is not a target of the tier "${options.tier}": nflb activate --name ${options.tier} ${ownFwmark}`,
      );
    }
  }

  // What every worker shares; each adds its queue (and the fragment worker its table).
  const common = {
    name: options.name,
    notargetsFwmark: options.notargetsFwmark,
    acceptInvalid: options.acceptInvalid,
    nolbFwmark: options.nolbFwmark,
    promiscuousPing: options.promiscuousPing,
    tier: options.tier,
  };
  const configs: WorkerConfig[] = options.queues.map((queue) => ({
    ...common,
    queue: { ...options.queue, queue },
  }));
  if (options.fragments) {
    const { queue, ...fragments } = options.fragments;
    configs.push({
      ...common,
      queue: { ...options.queue, queue, copyRange: NFQ_MAX_COPY_RANGE },
      fragments,
    });
  }
  const queueList = configs.map((c) => c.queue.queue).join(",");
  const workers = new Map<number, Worker>();
  const ready = new Set<number>();
  let failed = false;
  let stopping = false;

  const allStopped = new Promise<void>((resolve) => {
    let remaining = configs.length;
    const onExit = () => {
      remaining--;
      if (remaining === 0) resolve();
    };
    for (const config of configs) {
      const queue = config.queue.queue;
      const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: config });
      workers.set(queue, worker);
      worker.on("message", (message: WorkerMessage) => {
        switch (message.type) {
          case "ready":
            ready.add(message.queue);
            if (ready.size === configs.length) {
              log.notice(
                `load balancer "${options.name}" (M=${tableSize}, N=${maxTargets}) serving queue(s) ${queueList}`,
              );
            }
            break;
          case "error":
            log.warning(`queue ${message.queue}: ${message.message}`);
            failed = true;
            stop();
            break;
          case "log":
            log[message.level](message.message);
            break;
          case "stopped":
            log.info(`queue ${message.queue}: stopped`);
            break;
        }
      });
      worker.on("error", (err) => {
        log.warning(`queue ${queue}: worker failed: ${err.message}`);
        failed = true;
        stop();
      });
      worker.on("exit", onExit);
    }
  });

  function stop(): void {
    if (stopping) return;
    stopping = true;
    for (const worker of workers.values()) worker.postMessage({ type: "stop" });
    setTimeout(() => {
      for (const worker of workers.values()) void worker.terminate();
    }, STOP_TIMEOUT_MS).unref();
  }

  const onSignal = (signal: NodeJS.Signals) => {
    log.notice(`${signal}: stopping`);
    stop();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  await allStopped;
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  if (log.level >= LEVEL_VALUE.info) log.info("all queues stopped");
  return failed ? 1 : 0;
}
