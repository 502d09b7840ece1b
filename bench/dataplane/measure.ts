// What one run measures: delivery at an offered rate, the daemon's CPU per packet, and
// its capacity (a full queue drained).
import { cpuTimeOf, queueStatsOf, schedNsOf, sleep, softnetDropped } from "../traffic.js";
import { type BenchContext, QUEUE } from "./context.js";
import { type Daemon, daemonPackets } from "./daemon.js";

/** One delivery measurement: what the sender offered and what reached the targets. */
export interface Delivery {
  sent: number;
  sendSeconds: number;
  offeredPps: number;
  delivered: number;
  deliveredPps: number;
  dropped: number;
  /** Per target, to see the spread. */
  perTarget: number[];
  /** /proc/net/softnet_stat drops during the run (global: every namespace). */
  backlogDropped: number;
  /** Sender: failed sends, and times it fell > 20 ms behind and restarted its schedule. */
  sendErrors: number;
  senderResets: number;
  /** Daemon runs: the kernel queue's counters over the run. */
  queueDropped?: number;
  userDropped?: number;
  /** Daemon runs: packets the daemon gave a verdict in the run. */
  verdicts?: number;
}

export interface CpuSample {
  pps: number;
  packets: number;
  /** utime and stime from /proc/<pid>/stat: tick-sampled (10 ms), so the split is rough. */
  userSeconds: number;
  systemSeconds: number;
  /** (utime + stime) / packets, in microseconds. */
  usPerPacket: number;
  /** On-CPU time of the daemon's threads (schedstat, ns precision) / packets, in us. */
  schedUsPerPacket: number;
  delivered: number;
}

export interface Capacity {
  queued: number;
  drainSeconds: number;
  pps: number;
  /** Daemon CPU per packet while draining (schedstat), in us. */
  usPerPacket: number;
  delivered: number;
  queueDropped: number;
  userDropped: number;
}

/** Sends `packets` at `pps` and counts what the targets got. */
export async function measureDelivery(
  ctx: BenchContext,
  packets: number,
  pps: number,
  daemon?: Daemon,
): Promise<Delivery> {
  const before = ctx.sink.read();
  const backlogBefore = softnetDropped();
  const queueBefore = daemon ? queueStatsOf(daemon.pid).find((q) => q.queue === QUEUE) : undefined;
  const verdictsBefore = daemon ? daemonPackets(ctx) : 0;
  const sent = await ctx.sender.send(packets, pps);
  await ctx.sink.settle();
  const after = ctx.sink.read();
  const perTarget = after.map((v, i) => v - before[i]);
  const delivered = perTarget.reduce((a, b) => a + b, 0);
  const result: Delivery = {
    sent: sent.sent,
    sendSeconds: sent.seconds,
    offeredPps: sent.sent / sent.seconds,
    delivered,
    deliveredPps: delivered / sent.seconds,
    dropped: sent.sent - delivered,
    perTarget,
    backlogDropped: softnetDropped() - backlogBefore,
    sendErrors: sent.errors,
    senderResets: sent.resets,
  };
  if (daemon) {
    const queueAfter = queueStatsOf(daemon.pid).find((q) => q.queue === QUEUE);
    result.queueDropped = (queueAfter?.queueDropped ?? 0) - (queueBefore?.queueDropped ?? 0);
    result.userDropped = (queueAfter?.userDropped ?? 0) - (queueBefore?.userDropped ?? 0);
    result.verdicts = daemonPackets(ctx) - verdictsBefore;
  }
  return result;
}

export async function measureCpu(ctx: BenchContext, daemon: Daemon): Promise<CpuSample> {
  const { cpuPps, cpuSeconds } = ctx.options;
  const cpuBefore = cpuTimeOf(daemon.pid);
  const schedBefore = schedNsOf(daemon.pid);
  const packetsBefore = daemonPackets(ctx);
  const d = await measureDelivery(ctx, Math.round(cpuPps * cpuSeconds), cpuPps);
  const cpuAfter = cpuTimeOf(daemon.pid);
  const schedNs = schedNsOf(daemon.pid) - schedBefore;
  const packets = daemonPackets(ctx) - packetsBefore;
  const user = cpuAfter.user - cpuBefore.user;
  const system = cpuAfter.system - cpuBefore.system;
  return {
    pps: d.offeredPps,
    packets,
    userSeconds: user,
    systemSeconds: system,
    usPerPacket: ((user + system) / packets) * 1e6,
    schedUsPerPacket: schedNs / packets / 1e3,
    delivered: d.delivered,
  };
}

/** Fills the queue while the daemon is stopped, continues it, times the drain. */
export async function measureCapacity(ctx: BenchContext, daemon: Daemon): Promise<Capacity> {
  const { fillPackets, fillPps } = ctx.options;
  const sinkBefore = ctx.sink.total();
  const q0 = queueStatsOf(daemon.pid).find((q) => q.queue === QUEUE);
  daemon.signal("SIGSTOP");
  await sleep(50);
  await ctx.sender.send(fillPackets, fillPps);
  await sleep(50);
  const q1 = queueStatsOf(daemon.pid).find((q) => q.queue === QUEUE);
  const queued = q1?.queueTotal ?? 0;
  const schedBefore = schedNsOf(daemon.pid);
  const start = process.hrtime.bigint();
  let end = start;
  daemon.signal("SIGCONT");
  const deadline = Date.now() + 10_000;
  for (;;) {
    const q = queueStatsOf(daemon.pid).find((s) => s.queue === QUEUE);
    end = process.hrtime.bigint();
    if (!q || q.queueTotal === 0 || Date.now() > deadline) break;
    await sleep(1);
  }
  const schedNs = schedNsOf(daemon.pid) - schedBefore;
  const drainSeconds = Number(end - start) / 1e9;
  const delivered = (await ctx.sink.settle()) - sinkBefore;
  const q2 = queueStatsOf(daemon.pid).find((q) => q.queue === QUEUE);
  return {
    queued,
    drainSeconds,
    pps: queued / drainSeconds,
    usPerPacket: schedNs / queued / 1e3,
    delivered,
    queueDropped: (q2?.queueDropped ?? 0) - (q0?.queueDropped ?? 0),
    userDropped: (q2?.userDropped ?? 0) - (q0?.userDropped ?? 0),
  };
}
