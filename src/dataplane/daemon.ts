// The queue data plane as a library: one worker thread per queue, for the queues of one
// or more load balancers ("services"), and on the main thread what they share: the
// flows (compiled here once, see flowfeed.ts), the trace hub and, when asked for, the
// control endpoint. startDataplane() returns a handle to stop it (every packet already
// queued gets its verdict), to add and remove services, to see which queues are served
// since when and their counters. No signal handlers and no process exit here: `nflb lb`
// (cli/lb.ts) and `nflb run` decide that. Logging goes through the logger passed in.
import { Worker } from "node:worker_threads";
import type { LogLevelName } from "../log/logger.js";
import { NFQ_MAX_COPY_RANGE } from "../nfqueue/constants.js";
import { QUEUE_DEFAULTS, type QueueOptions } from "../nfqueue/queue.js";
import { openState } from "../state/store.js";
import { ControlServer } from "../trace/control.js";
import { TraceHub } from "../trace/hub.js";
import { Kind, TraceBit } from "../trace/kinds.js";
import { isLoopbackHost } from "../trace/paths.js";
import { flowConfJson } from "../trace/record.js";
import { type QueueCounters, readCounters } from "./counters.js";
import { FLOW_POLL_MS, FlowFeed } from "./flowfeed.js";
import type { FragmentOptions } from "./fraghandler.js";
import type { WorkerConfig, WorkerMessage } from "./queueworker.js";

/** One load balancer served by the data plane: its queues and how its packets are decided. */
export interface ServiceOptions {
  /** The load balancer (its shared state); it must exist. */
  name: string;
  /** Its queues, one worker thread (and socket) each. */
  queues: number[];
  /** Socket options of its queues (defaults: nflb lb's). */
  queue?: Partial<Omit<QueueOptions, "queue">>;
  /** Mark for packets when no target is active; 0/undefined = drop them. */
  notargetsFwmark?: number;
  /** Accept invalid packets unmarked instead of dropping them. */
  acceptInvalid?: boolean;
  /** Mark for packets no flow matches (when flows are defined); 0/undefined = drop them. */
  nolbFwmark?: number;
  /** ICMP echo matches any flow whose addresses match. */
  promiscuousPing?: boolean;
  /** The fragment queue: its worker copies whole packets and tracks fragments. */
  fragments?: FragmentOptions & { queue: number };
  /** The load-balancer tier's state (fragments go to the instance owning them). */
  tier?: string;
}

/** Where the data plane logs: a Logger, or anything with its four methods. */
export interface DataplaneLog {
  warning(message: string): void;
  notice(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export interface DataplaneOptions {
  services: ServiceOptions[];
  log: DataplaneLog;
  /**
   * The control endpoint (nflb trace): a Unix socket and, if given, a TCP port; `name`
   * is what a ping answers. Undefined = no endpoint (the trace hub still exists).
   */
  control?: { socket?: string; tcp?: { host: string; port: number }; name: string };
  /**
   * A queue that fails after it started stops the whole data plane (nflb lb: exit 1).
   * Default true; false stops only that queue's service.
   */
  stopAllOnFailure?: boolean;
}

export type QueueStatus = "starting" | "serving" | "stopping" | "stopped" | "failed";

export interface QueueInfo {
  queue: number;
  /** The load balancer (service) whose queue it is. */
  lb: string;
  /** The fragment queue of its service. */
  fragments: boolean;
  status: QueueStatus;
  /** When it entered that status. */
  since: Date;
  /** Why it failed. */
  error?: string;
}

export interface DataplaneHandle {
  readonly startedAt: Date;
  /** The trace hub: the workers' trace records; attach tracers to it. */
  readonly hub: TraceHub;
  /** The queues of the services being served (until their worker exits), with their status. */
  queues(): QueueInfo[];
  /** The counters of the served queues (from their counters files), with their service. */
  counters(): (QueueCounters & { lb: string })[];
  /** Starts a service's queues; resolves when all serve, rejects (nothing left) if one fails. */
  addService(service: ServiceOptions): Promise<void>;
  /** Stops a service's queues, each after answering the packets it holds. */
  removeService(name: string): Promise<void>;
  /** Looks at the flow files now (after a change, instead of waiting for the next poll). */
  reloadFlows(): void;
  /** Stops every queue (each answers the packets it holds first); resolves when done. */
  stop(): Promise<void>;
  /** Resolves once everything stopped: 0, or 1 after a failure. */
  readonly done: Promise<number>;
}

/** A worker that does not stop within this long after being asked is terminated. */
const STOP_TIMEOUT_MS = 5000;

interface QueueRuntime {
  info: QueueInfo;
  worker: Worker;
  /** Settles with the worker's "ready" (or its failure to start). */
  ready: Promise<void>;
  exited: Promise<void>;
}

/**
 * Starts the data plane with its services; resolves when every queue serves. Throws (and
 * leaves nothing running) when a load balancer does not exist, a tier is wrong, the
 * control endpoint cannot listen or a queue cannot be bound.
 */
export async function startDataplane(options: DataplaneOptions): Promise<DataplaneHandle> {
  const plane = new Dataplane(options);
  await plane.start();
  return plane;
}

class Dataplane implements DataplaneHandle {
  readonly startedAt = new Date();
  readonly hub = new TraceHub();
  readonly done: Promise<number>;
  private readonly runtimes = new Map<number, QueueRuntime>();
  private readonly services = new Map<string, ServiceOptions>();
  private readonly feed: FlowFeed;
  private readonly control: ControlServer | undefined;
  private flowTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private failed = false;
  private finish: (code: number) => void = () => {};

  constructor(private readonly options: DataplaneOptions) {
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
    this.feed = new FlowFeed({
      send: (message) => {
        for (const r of this.runtimes.values()) r.worker.postMessage(message);
      },
      rejected: (set, error) => {
        const what = set === "flows" ? "flows" : "trace flows";
        this.say("warning", `${what} not applied, keeping the previous ones: ${error}`);
        for (const q of this.runtimes.keys()) {
          this.hub.event(Kind.flowConf, flowConfJson(Date.now(), q, set, [], error));
        }
      },
    });
    const c = options.control;
    if (c !== undefined) {
      this.control = new ControlServer({
        socketPath: c.socket,
        tcp: c.tcp,
        hub: this.hub,
        log: (level, message) => this.say(level, message),
        describe: () => ({ name: c.name, queues: [...this.runtimes.keys()] }),
      });
    }
  }

  /** Logs a line, and hands it to the tracers of the log (whatever the log level). */
  say(level: LogLevelName, message: string): void {
    this.options.log[level](message);
    this.hub.log(level, message);
  }

  async start(): Promise<void> {
    for (const s of this.options.services) checkService(s);
    const tcp = this.options.control?.tcp;
    if (tcp !== undefined && !isLoopbackHost(tcp.host)) {
      this.say(
        "warning",
        `control endpoint on ${tcp.host}:${tcp.port} is not loopback: whoever reaches it can read the traces`,
      );
    }
    await this.control?.start();
    this.feed.refresh("flows");
    this.flowTimer = setInterval(() => this.followFlows(), FLOW_POLL_MS);
    try {
      for (const s of this.options.services) await this.addService(s);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  queues(): QueueInfo[] {
    return [...this.runtimes.values()].map((r) => ({ ...r.info }));
  }

  counters(): (QueueCounters & { lb: string })[] {
    const out: (QueueCounters & { lb: string })[] = [];
    for (const name of this.services.keys()) {
      const mine = new Set(
        [...this.runtimes.values()].filter((r) => r.info.lb === name).map((r) => r.info.queue),
      );
      for (const q of readCounters(name)) if (mine.has(q.queue)) out.push({ ...q, lb: name });
    }
    return out;
  }

  reloadFlows(): void {
    this.feed.refresh("flows");
    if ((this.hub.mask & TraceBit.packet) !== 0) this.feed.refresh("trace-flows");
  }

  async addService(s: ServiceOptions): Promise<void> {
    if (this.stopping) throw new Error("the data plane is stopping");
    checkService(s);
    if (this.services.has(s.name)) throw new Error(`load balancer "${s.name}" is served already`);
    const queues = [...s.queues, ...(s.fragments ? [s.fragments.queue] : [])];
    for (const q of queues) {
      if (this.runtimes.has(q)) {
        throw new Error(
          `queue ${q} is served already (load balancer "${this.runtimes.get(q)?.info.lb}")`,
        );
      }
    }
    const { tableSize, maxTargets } = stateGeometry(s.name);
    this.services.set(s.name, s);
    const started = s.queues.map((q) => this.startQueue(s, q, false));
    if (s.fragments) started.push(this.startQueue(s, s.fragments.queue, true));
    const results = await Promise.allSettled(started.map((r) => r.ready));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure !== undefined) {
      await this.stopQueues(started);
      this.services.delete(s.name);
      throw failure.reason;
    }
    this.say(
      "notice",
      `load balancer "${s.name}" (M=${tableSize}, N=${maxTargets}) serving queue(s) ${queues.join(",")}`,
    );
  }

  async removeService(name: string): Promise<void> {
    if (!this.services.has(name)) throw new Error(`load balancer "${name}" is not served`);
    await this.stopQueues([...this.runtimes.values()].filter((r) => r.info.lb === name));
    this.services.delete(name);
  }

  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      await this.stopQueues([...this.runtimes.values()]);
      clearInterval(this.flowTimer);
      this.say("info", "all queues stopped");
      this.hub.close();
      await this.control?.close();
      this.finish(this.failed ? 1 : 0);
    }
    await this.done;
  }

  private followFlows(): void {
    this.feed.refresh("flows");
    if ((this.hub.mask & TraceBit.packet) !== 0) this.feed.refresh("trace-flows");
  }

  /** Starts the worker of one queue of a service. */
  private startQueue(s: ServiceOptions, queue: number, fragments: boolean): QueueRuntime {
    const socket = { ...QUEUE_DEFAULTS, ...s.queue, queue };
    const config: WorkerConfig = {
      name: s.name,
      queue: fragments ? { ...socket, copyRange: NFQ_MAX_COPY_RANGE } : socket,
      notargetsFwmark: s.notargetsFwmark ?? 0,
      acceptInvalid: s.acceptInvalid === true,
      nolbFwmark: s.nolbFwmark ?? 0,
      promiscuousPing: s.promiscuousPing === true,
      tier: s.tier,
      flows: this.feed.current("flows"),
      traceFlows: this.feed.current("trace-flows"),
      trace: { mask: this.hub.maskBuffer, ring: this.hub.addRing(queue) },
    };
    if (fragments && s.fragments) {
      const { queue: _, ...f } = s.fragments;
      config.fragments = f;
    }
    const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: config });
    const info: QueueInfo = { queue, lb: s.name, fragments, status: "starting", since: new Date() };
    const set = (status: QueueStatus, error?: string) => {
      info.status = status;
      info.since = new Date();
      if (error !== undefined) info.error = error;
    };
    let onReady: () => void = () => {};
    let onFail: (err: Error) => void = () => {};
    const ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onFail = reject;
    });
    ready.catch(() => {}); // observed by addService; a later failure must not be unhandled
    const fail = (message: string) => {
      this.say("warning", `queue ${queue}: ${message}`);
      const wasServing = info.status === "serving";
      set("failed", message);
      onFail(new Error(`queue ${queue}: ${message}`));
      if (wasServing) this.onFailure(s.name);
    };
    worker.on("message", (message: WorkerMessage) => {
      switch (message.type) {
        case "ready":
          set("serving");
          onReady();
          break;
        case "error":
          fail(message.message);
          break;
        case "log":
          this.say(message.level, message.message);
          break;
        case "trace":
          this.hub.event(message.kind, message.record);
          break;
        case "stopped":
          this.say("info", `queue ${message.queue}: stopped`);
          break;
      }
    });
    worker.on("error", (err) => fail(`worker failed: ${err.message}`));
    const exited = new Promise<void>((resolve) => {
      worker.on("exit", () => {
        if (info.status === "serving") fail("the worker exited");
        if (info.status !== "failed") set("stopped");
        onFail(new Error(`queue ${queue}: the worker exited before serving`));
        this.hub.removeRing(queue);
        this.runtimes.delete(queue);
        resolve();
      });
    });
    const runtime: QueueRuntime = { info, worker, ready, exited };
    this.runtimes.set(queue, runtime);
    return runtime;
  }

  /** A queue failed while serving: stop everything (nflb lb), or only its service. */
  private onFailure(name: string): void {
    this.failed = true;
    if (this.options.stopAllOnFailure !== false) void this.stop();
    else if (this.services.has(name)) void this.removeService(name).catch(() => {});
  }

  /** Asks the workers to stop (each drains its queue first); terminates laggards. */
  private async stopQueues(list: QueueRuntime[]): Promise<void> {
    for (const r of list) {
      if (r.info.status === "serving" || r.info.status === "starting") r.info.status = "stopping";
      r.worker.postMessage({ type: "stop" });
    }
    const timer = setTimeout(() => {
      for (const r of list) void r.worker.terminate();
    }, STOP_TIMEOUT_MS);
    timer.unref();
    await Promise.all(list.map((r) => r.exited));
    clearTimeout(timer);
  }
}

/** M and N of a load balancer; throws when it does not exist. */
function stateGeometry(name: string): { tableSize: number; maxTargets: number } {
  const state = openState(name);
  const { tableSize, maxTargets } = state.config;
  state.close();
  return { tableSize, maxTargets };
}

/** Checks what can be checked before any worker starts: the load balancer and its tier. */
function checkService(s: ServiceOptions): void {
  const state = openState(s.name); // throws when the load balancer does not exist
  const { ownFwmark } = state.config;
  try {
    state.snapshot(); // a damaged state is refused here, in one line that says how to repair it
  } finally {
    state.close();
  }
  if (s.fragments && s.queues.includes(s.fragments.queue)) {
    throw new Error(`fragment queue ${s.fragments.queue} is also one of the queues`);
  }
  if (s.tier === undefined) return;
  if (ownFwmark === 0) {
    throw new Error(
      `--tier needs this instance's own fwmark: nflb init --name ${s.name} --ownfw FWMARK`,
    );
  }
  const tierState = openState(s.tier);
  const listed = tierState.snapshot().targets.some((t) => t.fwmark === ownFwmark);
  tierState.close();
  if (!listed) {
    throw new Error(
      `own fwmark ${ownFwmark} is not a target of the tier "${s.tier}": nflb activate --name ${s.tier} ${ownFwmark}`,
    );
  }
}
