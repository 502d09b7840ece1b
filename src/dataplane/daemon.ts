// `nflb lb`: starts one worker per queue, relays their logs, stops them cleanly on
// SIGTERM/SIGINT (each drains its socket so queued packets get verdicts). Its main thread
// also serves the control endpoint (trace), follows the log level in the shared state
// and sends the workers' trace records to the tracers.
import { statSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { LEVEL_VALUE, type Logger, type LogLevelName, levelName } from "../log/logger.js";
import { NFQ_MAX_COPY_RANGE } from "../nfqueue/constants.js";
import type { QueueOptions } from "../nfqueue/queue.js";
import { openState, type StateFile, tryOpenState } from "../state/store.js";
import { ControlServer } from "../trace/control.js";
import { TraceHub } from "../trace/hub.js";
import { Kind, TraceBit } from "../trace/kinds.js";
import { isLoopbackHost } from "../trace/paths.js";
import { flowConfJson } from "../trace/record.js";
import { FLOW_POLL_MS, FlowFeed } from "./flowfeed.js";
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
  /**
   * The control endpoint (trace): a Unix socket at `socket` (none when undefined) and, if
   * given, a TCP port.
   */
  control?: { socket?: string; tcp?: { host: string; port: number } };
  /**
   * Start with the log level stored in the shared state when there is one (`--loglevel`
   * not given); otherwise the logger's level is stored there.
   */
  keepStoredLogLevel?: boolean;
}

const STOP_TIMEOUT_MS = 5000;
/** How often the main thread looks at the shared log level. */
const LOG_LEVEL_POLL_MS = 100;

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

  // The log level lives in the shared state: `nflb loglevel` changes it while we run.
  // Every line the daemon logs also goes to the tracers that selected "log", whatever
  // its level.
  const hub = new TraceHub();
  let levelState: StateFile = openState(options.name);
  const say = (level: LogLevelName, message: string): void => {
    log[level](message);
    hub.log(level, message);
  };
  const stored = levelState.logLevel();
  const validStored = stored >= LEVEL_VALUE.warning && stored <= LEVEL_VALUE.debug;
  if (options.keepStoredLogLevel === true && validStored) log.level = stored;
  else levelState.setLogLevel(log.level);
  let levelPolls = 0;
  const followLogLevel = () => {
    // Once a second: a re-created state file (nflb delete + init) has its own level word.
    if (++levelPolls % 10 === 0) {
      try {
        if (statSync(levelState.path).ino !== levelState.inode) {
          const fresh = tryOpenState(options.name);
          if (fresh) {
            levelState.close();
            levelState = fresh;
            if (fresh.logLevel() < 0) fresh.setLogLevel(log.level);
          }
        }
      } catch {
        // deleted: keep the current level until it comes back
      }
    }
    const level = levelState.logLevel();
    if (level >= LEVEL_VALUE.warning && level <= LEVEL_VALUE.debug && level !== log.level) {
      log.level = Math.max(log.level, LEVEL_VALUE.notice);
      say("notice", `log level ${levelName(level)}`);
      log.level = level;
    }
  };
  const levelTimer = setInterval(followLogLevel, LOG_LEVEL_POLL_MS);
  levelTimer.unref();

  const control = new ControlServer({
    socketPath: options.control?.socket,
    tcp: options.control?.tcp,
    hub,
    log: say,
    describe: () => ({ name: options.name, queues: configs.map((c) => c.queue.queue) }),
  });
  const tcp = options.control?.tcp;
  if (tcp !== undefined && !isLoopbackHost(tcp.host)) {
    say(
      "warning",
      `control endpoint on ${tcp.host}:${tcp.port} is not loopback: whoever reaches it can read the traces`,
    );
  }

  // The flows are compiled here, once, and handed to the workers (see flowfeed.ts).
  const workers = new Map<number, Worker>();
  const queueNumbers = [...options.queues, ...(options.fragments ? [options.fragments.queue] : [])];
  const feed = new FlowFeed({
    send: (message) => {
      for (const worker of workers.values()) worker.postMessage(message);
    },
    rejected: (set, error) => {
      const what = set === "flows" ? "flows" : "trace flows";
      say("warning", `${what} not applied, keeping the previous ones: ${error}`);
      for (const q of queueNumbers) {
        hub.event(Kind.flowConf, flowConfJson(Date.now(), q, set, [], error));
      }
    },
  });
  feed.refresh("flows");
  const followFlows = () => {
    feed.refresh("flows");
    if ((hub.mask & TraceBit.packet) !== 0) feed.refresh("trace-flows");
  };

  // What every worker shares; each adds its queue (and the fragment worker its table).
  const common = {
    flows: feed.current("flows"),
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
    trace: { mask: hub.maskBuffer, ring: hub.addRing(queue) },
  }));
  if (options.fragments) {
    const { queue, ...fragments } = options.fragments;
    configs.push({
      ...common,
      queue: { ...options.queue, queue, copyRange: NFQ_MAX_COPY_RANGE },
      fragments,
      trace: { mask: hub.maskBuffer, ring: hub.addRing(queue) },
    });
  }
  try {
    await control.start();
  } catch (err) {
    clearInterval(levelTimer);
    levelState.close();
    throw err;
  }
  const queueList = configs.map((c) => c.queue.queue).join(",");
  const flowTimer = setInterval(followFlows, FLOW_POLL_MS);
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
              say(
                "notice",
                `load balancer "${options.name}" (M=${tableSize}, N=${maxTargets}) serving queue(s) ${queueList}`,
              );
            }
            break;
          case "error":
            say("warning", `queue ${message.queue}: ${message.message}`);
            failed = true;
            stop();
            break;
          case "log":
            say(message.level, message.message);
            break;
          case "trace":
            hub.event(message.kind, message.record);
            break;
          case "stopped":
            say("info", `queue ${message.queue}: stopped`);
            break;
        }
      });
      worker.on("error", (err) => {
        say("warning", `queue ${queue}: worker failed: ${err.message}`);
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
    say("notice", `${signal}: stopping`);
    stop();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  await allStopped;
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  if (log.level >= LEVEL_VALUE.info || hub.tracerCount > 0) say("info", "all queues stopped");
  clearInterval(levelTimer);
  clearInterval(flowTimer);
  hub.close();
  await control.close();
  levelState.close();
  return failed ? 1 : 0;
}
