// The scenarios: plain routing, the statistic rules, and the daemon with and without
// flows, at batch 64 and batch 1.
import { C as COUNTER } from "../../src/dataplane/counters.js";
import { target4, VIP4 } from "../../test/helpers/lbtopo.js";
import { type BenchContext, LB_NAME, QUEUE } from "./context.js";
import { Daemon, daemonPackets, flushConntrack, nflb, targetArgs, withOutput } from "./daemon.js";
import {
  benchFlowSpecs,
  checkFlowsLoaded,
  clearFlows,
  ensureServiceLbs,
  storeFlows,
  warmUp,
} from "./flows.js";
import {
  type Capacity,
  type CpuSample,
  type Delivery,
  measureCapacity,
  measureCpu,
  measureDelivery,
} from "./measure.js";
/** Every scenario, in the order a round runs them. */
export const SCENARIOS = [
  "plain",
  "statistic",
  "daemon64",
  "flows1",
  "flows2000",
  "flows2000vip",
  "daemon1",
] as const;
export type ScenarioName = (typeof SCENARIOS)[number];
/** The scenarios run unless --only names others (flows2000vip only on request). */
export const DEFAULT_SCENARIOS: readonly ScenarioName[] = SCENARIOS.filter(
  (name) => name !== "flows2000vip",
);

/** The flow scenarios: the daemon64 setup with `count` flows defined (benchFlowSpecs). */
export const FLOW_SCENARIOS: Partial<
  Record<ScenarioName, { count: number; onBenchPort: boolean }>
> = {
  flows1: { count: 1, onBenchPort: false },
  flows2000: { count: 2000, onBenchPort: false },
  flows2000vip: { count: 2000, onBenchPort: true },
};

export interface DaemonRun {
  batch: number;
  /** Flow scenarios: the flows defined (0: none, the daemon balances its own LB). */
  flows: number;
  /** Flow scenarios: time to validate, compile and store them in-process (updateFlows). */
  flowsWriteMs?: number;
  /** Flow scenarios: packets the daemon dropped for matching no flow (must be 0). */
  noFlowDropped?: number;
  cpu: CpuSample;
  /** At the offered rate with the daemon's defaults (its default queue length). */
  delivery: Delivery;
  /** At the offered rate with --qlength 65536: the queue absorbs stalls of the daemon. */
  deepDelivery: Delivery;
  capacity: Capacity;
  /** `nflb stats --json` right after the delivery measurement. */
  stats?: unknown;
}

/** 1. No nflb: an ECMP route for the VIP over the targets, hashed on the 5-tuple. */
export async function runPlain(ctx: BenchContext): Promise<Delivery> {
  const { lb } = ctx.topo;
  lb.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
  const hops = ctx.topo.targets.flatMap((_, i) => ["nexthop", "via", target4(i + 1)]);
  lb.exec("ip", ["route", "replace", `${VIP4}/32`, ...hops]);
  try {
    return await measureDelivery(
      ctx,
      Math.round(ctx.options.pps * ctx.options.seconds),
      ctx.options.pps,
    );
  } finally {
    lb.exec("ip", ["route", "del", `${VIP4}/32`]);
  }
}

/** 2. Kernel-only round robin: `nflb setup --mode statistic --statistic nth`. */
export async function runStatistic(ctx: BenchContext): Promise<Delivery> {
  flushConntrack(ctx.topo.lb);
  nflb(ctx, [
    "setup",
    "--name",
    LB_NAME,
    "--mode",
    "statistic",
    "--statistic",
    "nth",
    "--vip",
    VIP4,
    ...targetArgs(ctx),
  ]);
  try {
    return await measureDelivery(
      ctx,
      Math.round(ctx.options.pps * ctx.options.seconds),
      ctx.options.pps,
    );
  } finally {
    nflb(ctx, ["teardown", "--name", LB_NAME]);
  }
}

/** 3.-6. `--mode nat` + the daemon with a given batch size, and `flowCount` flows (0: no
 * flows, the daemon balances its own load balancer; else benchFlowSpecs(flowCount)). */
export async function runDaemon(
  ctx: BenchContext,
  batch: number,
  flowCount = 0,
  onBenchPort = false,
): Promise<DaemonRun> {
  flushConntrack(ctx.topo.lb);
  nflb(ctx, [
    "setup",
    "--name",
    LB_NAME,
    "--mode",
    "nat",
    "--vip",
    VIP4,
    ...targetArgs(ctx),
    "--queue",
    String(QUEUE),
  ]);
  try {
    // Flows are in place before the daemon starts; it compiles them at its first batch,
    // during the warm-up.
    let flowsWriteMs: number | undefined;
    if (flowCount > 0) {
      ensureServiceLbs(ctx);
      flowsWriteMs = storeFlows(ctx, benchFlowSpecs(flowCount, onBenchPort));
    } else {
      clearFlows(ctx);
    }
    // At info level the daemon logs how many flows it compiled (never per packet).
    const logArgs = flowCount > 0 ? ["--loglevel", "info"] : [];
    let noFlowDropped = 0;
    // Daemon defaults (queue length and receive buffer) for rate and CPU.
    let daemon = await Daemon.start(ctx, ["--batch", String(batch), ...logArgs]);
    let cpu: CpuSample;
    let delivery: Delivery;
    let stats: unknown;
    try {
      await warmUp(ctx, daemon, flowCount);
      const noFlowBefore = daemonPackets(ctx, COUNTER.noFlowDropped);
      cpu = await measureCpu(ctx, daemon);
      delivery = await measureDelivery(
        ctx,
        Math.round(ctx.options.pps * ctx.options.seconds),
        ctx.options.pps,
        daemon,
      );
      if (flowCount > 0) {
        checkFlowsLoaded(daemon, flowCount);
        noFlowDropped += daemonPackets(ctx, COUNTER.noFlowDropped) - noFlowBefore;
      }
      try {
        stats = JSON.parse(nflb(ctx, ["stats", "--name", LB_NAME, "--json"]));
      } catch (err) {
        stats = { error: (err as Error).message };
      }
    } catch (err) {
      throw withOutput(err, daemon);
    } finally {
      await daemon.stop();
    }
    // The deepest queue the kernel allows, and a receive buffer that holds all of it.
    daemon = await Daemon.start(ctx, [
      "--batch",
      String(batch),
      "--qlength",
      "65536",
      "--rcvbuf",
      String(256 << 20),
      ...logArgs,
    ]);
    let deepDelivery: Delivery;
    let capacity: Capacity;
    try {
      await warmUp(ctx, daemon, flowCount);
      const noFlowBefore = daemonPackets(ctx, COUNTER.noFlowDropped);
      deepDelivery = await measureDelivery(
        ctx,
        Math.round(ctx.options.pps * ctx.options.seconds),
        ctx.options.pps,
        daemon,
      );
      capacity = await measureCapacity(ctx, daemon);
      if (flowCount > 0) {
        checkFlowsLoaded(daemon, flowCount);
        noFlowDropped += daemonPackets(ctx, COUNTER.noFlowDropped) - noFlowBefore;
      }
    } catch (err) {
      throw withOutput(err, daemon);
    } finally {
      await daemon.stop();
    }
    if (noFlowDropped !== 0) {
      throw new Error(`${noFlowDropped} packets matched no flow: the bench flow does not match`);
    }
    const run: DaemonRun = { batch, flows: flowCount, cpu, delivery, deepDelivery, capacity };
    if (flowCount > 0) Object.assign(run, { flowsWriteMs, noFlowDropped });
    run.stats = stats;
    return run;
  } finally {
    if (flowCount > 0) clearFlows(ctx);
    nflb(ctx, ["teardown", "--name", LB_NAME]);
  }
}
