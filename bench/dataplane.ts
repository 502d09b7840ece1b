// Data-plane benchmark: UDP through the load-balancer topology of the end-to-end tests,
// four ways side by side, interleaved round by round (plain, statistic, daemon/64,
// daemon/1, plain, ...) because this machine is shared and noisy.
//
//   client --(AF_PACKET sender, 64 UDP flows)--> lb --> target1..3 (nft counter, drop)
//
// 1. plain      no nflb: the lb routes the VIP by an ECMP route over the 3 targets (L4
//               hash), the targets hold the VIP on loopback. The kernel's ceiling.
// 2. statistic  `nflb setup --mode statistic`: iptables statistic nth + DNAT, kernel only.
// 3. daemon64   `nflb setup --mode nat` + `nflb lb --batch 64`: NFQUEUE, Maglev, fwmark, DNAT.
// 4. daemon1    the same with --batch 1: one packet per recvmmsg and one sendto per verdict.
// Per daemon run: CPU per packet at a fixed rate the daemon keeps up with and delivery at
// the offered rate, with the daemon's defaults; then, with --qlength 65536, delivery at
// the offered rate again and capacity: the daemon is stopped (SIGSTOP) while the sender
// fills its queue, then continued; capacity = queued packets / time until the kernel has
// every verdict (queue_total back to 0).
//
// Needs root, python3 (the sender), nft, iptables-nft; conntrack (to flush stale NAT
// bindings between scenarios) and taskset (to pin sender and daemon) when present.
// Run alone: node dist/bench/dataplane.js [--only plain,statistic,daemon64,daemon1]
//            [--rounds 3] [--pps 200000] [--seconds 3] [--json]
import { type ChildProcess, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { C as COUNTER } from "../src/dataplane/counters.js";
import {
  buildLbTopology,
  CLIENT4,
  type LbTopology,
  target4,
  VIP4,
} from "../test/helpers/lbtopo.js";
import { isRoot, type Netns } from "../test/helpers/netns.js";
import {
  cpuTimeOf,
  macOf,
  median,
  queueStatsOf,
  SinkCounters,
  schedNsOf,
  sleep,
  softnetDropped,
  UdpSender,
} from "./traffic.js";

const CLI = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const LB_NAME = "bench";
const DST_PORT = 9000;
const FIRST_SRC_PORT = 10_000;
const FLOWS = 64;
const PAYLOAD = 64;
const QUEUE = 0;

export const SCENARIOS = ["plain", "statistic", "daemon64", "daemon1"] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export interface DataplaneOptions {
  rounds: number;
  /** Offered rate (packets/s) and duration of the delivery measurement. */
  pps: number;
  seconds: number;
  /** Fixed rate and duration of the daemon's CPU-per-packet measurement. */
  cpuPps: number;
  cpuSeconds: number;
  /** Packets queued while the daemon is stopped (capacity), <= 65536. */
  fillPackets: number;
  /** Sending rate while filling the queue (0: as fast as the sender goes). */
  fillPps: number;
  /** Pin the sender to CPU 0 and the daemon to the last CPU. */
  pin: boolean;
  only: readonly ScenarioName[];
  log: (line: string) => void;
}

export const DEFAULT_OPTIONS: DataplaneOptions = {
  rounds: 3,
  pps: 200_000,
  seconds: 3,
  cpuPps: 100_000,
  cpuSeconds: 2,
  fillPackets: 60_000,
  fillPps: 0,
  pin: true,
  only: SCENARIOS,
  log: (line) => process.stderr.write(`${line}\n`),
};

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

export interface DaemonRun {
  batch: number;
  cpu: CpuSample;
  /** At the offered rate with the daemon's defaults (queue 4096 deep). */
  delivery: Delivery;
  /** At the offered rate with --qlength 65536: the queue absorbs stalls of the daemon. */
  deepDelivery: Delivery;
  capacity: Capacity;
  /** `nflb stats --json` right after the delivery measurement. */
  stats?: unknown;
}

export interface BenchContext {
  topo: LbTopology;
  stateDir: string;
  workDir: string;
  sender: UdpSender;
  sink: SinkCounters;
  options: DataplaneOptions;
}

function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Why the data-plane bench cannot run here, or undefined when it can. */
export function dataplaneUnavailable(): string | undefined {
  if (!isRoot()) return "needs root (network namespaces, nft, NFQUEUE)";
  const missing = ["ip", "nft", "iptables-nft", "python3"].filter((c) => !have(c));
  if (missing.length > 0) return `missing ${missing.join(", ")} (scripts/setup.sh installs them)`;
  return undefined;
}

// ---------------------------------------------------------------- nflb invocations

function nflb(ctx: BenchContext, args: readonly string[]): string {
  try {
    return execFileSync("ip", ["netns", "exec", ctx.topo.lb.name, process.execPath, CLI, ...args], {
      encoding: "utf8",
      env: { ...process.env, NFLB_STATE_DIR: ctx.stateDir },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 30_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`nflb ${args.join(" ")}: ${e.stderr?.trim() || e.message}`);
  }
}

function targetArgs(ctx: BenchContext): string[] {
  return ctx.topo.targets.flatMap((_, i) => ["--target", `${i + 1}=${target4(i + 1)}`]);
}

/** Forgets the NAT bindings of an earlier scenario, so every run starts with new flows. */
function flushConntrack(lb: Netns): void {
  if (have("conntrack")) lb.tryExec("conntrack", ["-F"]);
}

/** Daemons still running and work directories still there: cleaned up if the bench
 * exits on a signal (test/helpers/netns.ts exits on SIGINT/SIGTERM) or an uncaught error. */
const liveDaemons = new Set<ChildProcess>();
const liveWorkDirs = new Set<string>();
process.on("exit", () => {
  for (const child of liveDaemons) child.kill("SIGKILL");
  for (const dir of liveWorkDirs) rmSync(dir, { recursive: true, force: true });
});

class Daemon {
  private exited = false;
  /** The last 4000 characters the daemon printed. */
  output = "";
  readonly exit: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    child.stdout?.on("data", (d: Buffer) => this.append(d));
    child.stderr?.on("data", (d: Buffer) => this.append(d));
    liveDaemons.add(child);
    this.exit = new Promise((resolve) => {
      child.on("exit", (code) => {
        this.exited = true;
        liveDaemons.delete(child);
        resolve(code);
      });
    });
  }

  private append(d: Buffer): void {
    this.output = (this.output + d.toString()).slice(-4000);
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error("daemon has no pid");
    return this.child.pid;
  }

  /** Starts `nflb lb` in the lb namespace and waits until its queue is bound. */
  static async start(ctx: BenchContext, extra: readonly string[]): Promise<Daemon> {
    const pin = ctx.options.pin && cpus().length >= 2 && have("taskset");
    const argv = [
      ...(pin ? ["taskset", "-c", String(cpus().length - 1)] : []),
      process.execPath,
      CLI,
      "lb",
      "--name",
      LB_NAME,
      "--queue",
      String(QUEUE),
      ...extra,
    ];
    const child = ctx.topo.lb.spawn(argv[0], argv.slice(1), {
      env: { ...process.env, NFLB_STATE_DIR: ctx.stateDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const daemon = new Daemon(child);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (daemon.exited) throw new Error(`nflb lb exited at start:\n${daemon.output.trim()}`);
      if (queueStatsOf(daemon.pid).some((q) => q.queue === QUEUE)) {
        // The worker binds before it polls; give it a moment to enter its loop.
        await sleep(200);
        return daemon;
      }
      await sleep(50);
    }
    await daemon.stop();
    throw new Error(`nflb lb did not bind queue ${QUEUE} within 15 s:\n${daemon.output.trim()}`);
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.exited) this.child.kill(sig);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill("SIGCONT");
    this.child.kill("SIGTERM");
    const timeout = sleep(8_000).then(() => "timeout" as const);
    if ((await Promise.race([this.exit, timeout])) === "timeout") {
      this.child.kill("SIGKILL");
      await this.exit;
    }
  }
}

function withOutput(err: unknown, daemon: Daemon): Error {
  const tail = daemon.output.trim();
  return new Error(`${(err as Error).message}${tail ? `\nnflb lb said:\n${tail}` : ""}`);
}

/** Packets the daemon has given a verdict (its counters file), or NaN if unreadable. */
function daemonPackets(ctx: BenchContext): number {
  try {
    const bytes = readFileSync(join(ctx.stateDir, `${LB_NAME}.q${QUEUE}.stats`));
    const words = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length >> 3);
    return words[COUNTER.packets];
  } catch {
    return Number.NaN;
  }
}

// ---------------------------------------------------------------- measurements

/** Sends `packets` at `pps` and counts what the targets got. */
async function measureDelivery(
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

async function measureCpu(ctx: BenchContext, daemon: Daemon): Promise<CpuSample> {
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
async function measureCapacity(ctx: BenchContext, daemon: Daemon): Promise<Capacity> {
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

// ---------------------------------------------------------------- scenarios

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

/** 3./4. `--mode nat` + the daemon with a given batch size. */
export async function runDaemon(ctx: BenchContext, batch: number): Promise<DaemonRun> {
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
    // Daemon defaults (queue 4096 deep, 32 MiB receive buffer) for rate and CPU.
    let daemon = await Daemon.start(ctx, ["--batch", String(batch)]);
    let cpu: CpuSample;
    let delivery: Delivery;
    let stats: unknown;
    try {
      cpu = await measureCpu(ctx, daemon);
      delivery = await measureDelivery(
        ctx,
        Math.round(ctx.options.pps * ctx.options.seconds),
        ctx.options.pps,
        daemon,
      );
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
    ]);
    let deepDelivery: Delivery;
    let capacity: Capacity;
    try {
      deepDelivery = await measureDelivery(
        ctx,
        Math.round(ctx.options.pps * ctx.options.seconds),
        ctx.options.pps,
        daemon,
      );
      capacity = await measureCapacity(ctx, daemon);
    } catch (err) {
      throw withOutput(err, daemon);
    } finally {
      await daemon.stop();
    }
    return { batch, cpu, delivery, deepDelivery, capacity, stats };
  } finally {
    nflb(ctx, ["teardown", "--name", LB_NAME]);
  }
}

// ---------------------------------------------------------------- the whole bench

/** Builds the topology, the sinks and the sender; `destroy` removes every namespace. */
export function createContext(options: DataplaneOptions): BenchContext & { destroy(): void } {
  const topo = buildLbTopology({ targets: 3, dsr: true });
  const workDir = mkdtempSync(join(tmpdir(), "nflb-bench-"));
  liveWorkDirs.add(workDir);
  const stateDir = join(workDir, "state");
  try {
    const { client, lb, targets } = topo;
    // Static neighbours: no packet waits for ARP at the start of a run.
    targets.forEach((t, i) => {
      lb.exec("ip", [
        "neigh",
        "replace",
        target4(i + 1),
        "lladdr",
        macOf(t, "eth0"),
        "dev",
        `t${i + 1}`,
        "nud",
        "permanent",
      ]);
    });
    const sender = new UdpSender(
      client,
      "eth0",
      {
        srcMac: macOf(client, "eth0"),
        dstMac: macOf(lb, "c0"),
        srcIp: CLIENT4,
        dstIp: VIP4,
        firstSrcPort: FIRST_SRC_PORT,
        flows: FLOWS,
        dstPort: DST_PORT,
        payload: PAYLOAD,
      },
      // The sender on CPU 0, the daemon on the last CPU.
      options.pin && cpus().length >= 2 && have("taskset") ? 0 : undefined,
    );
    const sink = new SinkCounters(targets, DST_PORT);
    return {
      topo,
      stateDir,
      workDir,
      sender,
      sink,
      options,
      destroy: () => {
        topo.destroy();
        rmSync(workDir, { recursive: true, force: true });
        liveWorkDirs.delete(workDir);
      },
    };
  } catch (err) {
    topo.destroy();
    rmSync(workDir, { recursive: true, force: true });
    throw err;
  }
}

export interface DataplaneReport {
  setup: {
    flows: number;
    udpPayloadBytes: number;
    ipPacketBytes: number;
    offeredPps: number;
    seconds: number;
    cpuPps: number;
    fillPackets: number;
    rounds: number;
    cpus: number;
    /** 1-minute load average when the bench started: other work on the machine. */
    loadAverage: number;
    kernel: string;
  };
  /** Medians over the rounds. */
  medians: Record<string, Record<string, number>>;
  ratios: Record<string, number>;
  rounds: Record<ScenarioName, unknown[]>;
  notes: string[];
}

function medianOf<T>(runs: T[], pick: (t: T) => number | undefined): number {
  return median(runs.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v)));
}

function deliveryMedians(runs: Delivery[]): Record<string, number> {
  return {
    offeredPps: medianOf(runs, (r) => r.offeredPps),
    deliveredPps: medianOf(runs, (r) => r.deliveredPps),
    dropped: medianOf(runs, (r) => r.dropped),
    dropPercent: medianOf(runs, (r) => (100 * r.dropped) / r.sent),
    queueDropped: medianOf(runs, (r) => r.queueDropped),
    userDropped: medianOf(runs, (r) => r.userDropped),
    backlogDropped: medianOf(runs, (r) => r.backlogDropped),
    senderResets: medianOf(runs, (r) => r.senderResets),
  };
}

function daemonMedians(runs: DaemonRun[]): Record<string, number> {
  const deep = deliveryMedians(runs.map((r) => r.deepDelivery));
  return {
    ...deliveryMedians(runs.map((r) => r.delivery)),
    deepOfferedPps: deep.offeredPps,
    deepDeliveredPps: deep.deliveredPps,
    deepDropped: deep.dropped,
    deepDropPercent: deep.dropPercent,
    deepQueueDropped: deep.queueDropped,
    deepUserDropped: deep.userDropped,
    capacityPps: medianOf(runs, (r) => r.capacity.pps),
    capacityUsPerPacket: medianOf(runs, (r) => r.capacity.usPerPacket),
    capacityQueued: medianOf(runs, (r) => r.capacity.queued),
    cpuPps: medianOf(runs, (r) => r.cpu.pps),
    cpuUsPerPacket: medianOf(runs, (r) => r.cpu.usPerPacket),
    cpuSchedUsPerPacket: medianOf(runs, (r) => r.cpu.schedUsPerPacket),
  };
}

export async function benchDataplane(
  partial: Partial<DataplaneOptions> = {},
): Promise<DataplaneReport> {
  const options: DataplaneOptions = { ...DEFAULT_OPTIONS, ...partial };
  if (options.fillPackets > 65536) throw new Error("fillPackets must be <= 65536 (queue-maxlen)");
  const loadAverage = loadavg()[0];
  const ctx = createContext(options);
  const runs: Record<ScenarioName, unknown[]> = {
    plain: [],
    statistic: [],
    daemon64: [],
    daemon1: [],
  };
  const notes: string[] = [];
  const log = options.log;
  try {
    for (let round = 1; round <= options.rounds; round++) {
      for (const name of SCENARIOS) {
        if (!options.only.includes(name)) continue;
        const t0 = Date.now();
        try {
          let summary: string;
          if (name === "plain" || name === "statistic") {
            const d = name === "plain" ? await runPlain(ctx) : await runStatistic(ctx);
            runs[name].push(d);
            summary = `delivered ${fmt(d.deliveredPps)} pps of ${fmt(d.offeredPps)}, dropped ${d.dropped}`;
          } else {
            const r = await runDaemon(ctx, name === "daemon64" ? 64 : 1);
            runs[name].push(r);
            const d = (x: Delivery) =>
              `${fmt(x.deliveredPps)} pps of ${fmt(x.offeredPps)} (queue full ${x.queueDropped}, socket full ${x.userDropped})`;
            summary =
              `delivered ${d(r.delivery)}, with qlength 65536 ${d(r.deepDelivery)}; ` +
              `capacity ${fmt(r.capacity.pps)} pps (${r.capacity.queued} queued); ` +
              `${r.cpu.usPerPacket.toFixed(2)} us/packet at ${fmt(r.cpu.pps)} pps`;
          }
          log(
            `[dataplane] round ${round} ${name}: ${summary} (${((Date.now() - t0) / 1000).toFixed(1)} s)`,
          );
        } catch (err) {
          const msg = `round ${round} ${name} failed: ${(err as Error).message}`;
          log(`[dataplane] ${msg}`);
          notes.push(msg);
        }
      }
    }
  } finally {
    ctx.destroy();
  }

  const medians: Record<string, Record<string, number>> = {};
  if (runs.plain.length) medians.plain = deliveryMedians(runs.plain as Delivery[]);
  if (runs.statistic.length) medians.statistic = deliveryMedians(runs.statistic as Delivery[]);
  if (runs.daemon64.length) medians.daemon64 = daemonMedians(runs.daemon64 as DaemonRun[]);
  if (runs.daemon1.length) medians.daemon1 = daemonMedians(runs.daemon1 as DaemonRun[]);
  const ratio = (a?: number, b?: number) =>
    a !== undefined && b !== undefined && b > 0 ? a / b : Number.NaN;
  const ratios: Record<string, number> = {
    daemonOverPlainDelivered: ratio(medians.daemon64?.deliveredPps, medians.plain?.deliveredPps),
    daemonDeepQueueOverPlainDelivered: ratio(
      medians.daemon64?.deepDeliveredPps,
      medians.plain?.deliveredPps,
    ),
    daemonBatch64OverBatch1Capacity: ratio(
      medians.daemon64?.capacityPps,
      medians.daemon1?.capacityPps,
    ),
    daemonBatch64OverBatch1Delivered: ratio(
      medians.daemon64?.deliveredPps,
      medians.daemon1?.deliveredPps,
    ),
    daemonBatch1OverBatch64CpuPerPacket: ratio(
      medians.daemon1?.cpuUsPerPacket,
      medians.daemon64?.cpuUsPerPacket,
    ),
    statisticOverPlainDelivered: ratio(
      medians.statistic?.deliveredPps,
      medians.plain?.deliveredPps,
    ),
  };
  return {
    setup: {
      flows: FLOWS,
      udpPayloadBytes: PAYLOAD,
      ipPacketBytes: 20 + 8 + PAYLOAD,
      offeredPps: options.pps,
      seconds: options.seconds,
      cpuPps: options.cpuPps,
      fillPackets: options.fillPackets,
      rounds: options.rounds,
      cpus: cpus().length,
      loadAverage,
      kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    },
    medians,
    ratios,
    rounds: runs,
    notes,
  };
}

// ---------------------------------------------------------------- output

function fmt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "-";
  return Math.round(n).toLocaleString("en-US");
}

function pct(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? "-" : `${n.toFixed(1)}%`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  return rows.map((row) =>
    row
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join("  ")
      .trimEnd(),
  );
}

/** The report as fixed-width tables. */
export function formatDataplane(r: DataplaneReport): string {
  const s = r.setup;
  const out: string[] = [];
  out.push(
    `data plane: ${s.flows} UDP flows, ${s.udpPayloadBytes} B UDP payload (${s.ipPacketBytes} B IP packets), ` +
      `${fmt(s.offeredPps)} pps offered for ${s.seconds} s, medians of ${s.rounds} interleaved rounds, ` +
      `${s.cpus} CPUs (load ${s.loadAverage} at start), kernel ${s.kernel}`,
  );
  const rows: string[][] = [
    ["scenario", "offered pps", "delivered pps", "dropped", "drop %", "queue full", "socket full"],
  ];
  const row = (label: string, m: Record<string, number>, prefix: "" | "deep", daemon: boolean) => {
    const k = (name: string) => (prefix ? `deep${name[0].toUpperCase()}${name.slice(1)}` : name);
    rows.push([
      label,
      fmt(m[k("offeredPps")]),
      fmt(m[k("deliveredPps")]),
      fmt(m[k("dropped")]),
      pct(m[k("dropPercent")]),
      daemon ? fmt(m[k("queueDropped")]) : "",
      daemon ? fmt(m[k("userDropped")]) : "",
    ]);
  };
  if (r.medians.plain) row("plain routing (ECMP)", r.medians.plain, "", false);
  if (r.medians.statistic) row("statistic nth DNAT", r.medians.statistic, "", false);
  for (const [key, batch] of [
    ["daemon64", 64],
    ["daemon1", 1],
  ] as const) {
    const m = r.medians[key];
    if (!m) continue;
    row(`nflb lb, batch ${batch}, qlength 4096`, m, "", true);
    row(`nflb lb, batch ${batch}, qlength 65536`, m, "deep", true);
  }
  out.push(...table(rows));

  const daemonRows: string[][] = [
    ["daemon", "capacity pps", "us/packet draining", "us/packet at fixed rate", "fixed rate pps"],
  ];
  for (const [key, batch] of [
    ["daemon64", 64],
    ["daemon1", 1],
  ] as const) {
    const m = r.medians[key];
    if (!m) continue;
    daemonRows.push([
      `batch ${batch}`,
      fmt(m.capacityPps),
      m.capacityUsPerPacket.toFixed(2),
      m.cpuUsPerPacket.toFixed(2),
      fmt(m.cpuPps),
    ]);
  }
  if (daemonRows.length > 1) {
    out.push("", ...table(daemonRows));
    out.push(
      "(capacity: a full queue drained by a daemon that has a CPU to itself; CPU: utime+stime of all",
      " its threads, which includes the kernel forwarding each accepted packet inside its sendto)",
    );
  }

  out.push("");
  const ratioLabels: Record<string, string> = {
    daemonOverPlainDelivered: "daemon (batch 64) / plain, delivered",
    daemonDeepQueueOverPlainDelivered: "same with qlength 65536",
    daemonBatch64OverBatch1Capacity: "daemon capacity, batch 64 / batch 1",
    daemonBatch64OverBatch1Delivered: "daemon delivered, batch 64 / batch 1",
    daemonBatch1OverBatch64CpuPerPacket: "daemon CPU per packet, batch 1 / batch 64",
    statisticOverPlainDelivered: "statistic / plain, delivered",
  };
  for (const [key, label] of Object.entries(ratioLabels)) {
    const v = r.ratios[key];
    if (Number.isFinite(v)) out.push(`${label.padEnd(42)} ${v.toFixed(2)}`);
  }
  for (const note of r.notes) out.push(`note: ${note}`);
  return out.join("\n");
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      only: { type: "string" },
      rounds: { type: "string" },
      pps: { type: "string" },
      seconds: { type: "string" },
      json: { type: "boolean" },
    },
  });
  const why = dataplaneUnavailable();
  if (why) {
    console.log(`data-plane bench skipped: ${why}`);
  } else {
    const only = values.only?.split(",").map((s) => s.trim()) ?? [...SCENARIOS];
    for (const name of only) {
      if (!(SCENARIOS as readonly string[]).includes(name)) {
        throw new Error(`unknown scenario "${name}": ${SCENARIOS.join(", ")}`);
      }
    }
    const report = await benchDataplane({
      only: only as ScenarioName[],
      ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
      ...(values.pps ? { pps: Number(values.pps) } : {}),
      ...(values.seconds ? { seconds: Number(values.seconds) } : {}),
    });
    console.log(values.json ? JSON.stringify(report, null, 2) : formatDataplane(report));
  }
}
