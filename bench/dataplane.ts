// Data-plane benchmark: UDP through the load-balancer topology of the end-to-end tests,
// six ways side by side, interleaved round by round (plain, statistic, daemon/64, flows1,
// flows2000, daemon/1, plain, ...) because this machine is shared and noisy.
//
//   client --(AF_PACKET sender, 64 UDP flows)--> lb --> target1..3 (nft counter, drop)
//
// 1. plain      no nflb: the lb routes the VIP by an ECMP route over the 3 targets (L4
//               hash), the targets hold the VIP on loopback. The kernel's ceiling.
// 2. statistic  `nflb setup --mode statistic`: iptables statistic nth + DNAT, kernel only.
// 3. daemon64   `nflb setup --mode nat` + `nflb lb --batch 64`: NFQUEUE, Maglev, fwmark, DNAT.
// 4. flows1     daemon64 with one flow that matches the traffic (stored in-process through
//               the flow store, as `nflb flow-set` does).
// 5. flows2000  daemon64 with 2,000 flows: the matching one has the lowest priority, the
//               1,999 others are services that do not match (their own /32 or /24, port
//               ranges, byte matches, other ports and protocols on the bench VIP).
//    flows2000vip (only with --only) the same, with 208 of them on the bench's own VIP,
//               protocol and port, for other client networks or other payload bytes.
// 6. daemon1    the same as daemon64 with --batch 1: one packet per recvmmsg and one sendto
//               per verdict.
// Each daemon start gets 2,000 unmeasured packets first (flows compiled, JIT warm).
// Per daemon run: CPU per packet at a fixed rate the daemon keeps up with and delivery at
// the offered rate, with the daemon's defaults; then, with --qlength 65536, delivery at
// the offered rate again and capacity: the daemon is stopped (SIGSTOP) while the sender
// fills its queue, then continued; capacity = queued packets / time until the kernel has
// every verdict (queue_total back to 0).
//
// Needs root, python3 (the sender), nft, iptables-nft; conntrack (to flush stale NAT
// bindings between scenarios) and taskset (to pin sender and daemon) when present.
// Run alone: node dist/bench/dataplane.js [--only plain,statistic,daemon64,flows1,...]
//            [--rounds 3] [--pps 200000] [--seconds 3] [--json]
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  createContext,
  type DataplaneOptions,
  DEFAULT_OPTIONS,
  dataplaneUnavailable,
  FLOWS,
  PAYLOAD,
} from "./dataplane/context.js";
import { daemonDefaultQlength } from "./dataplane/daemon.js";
import type { Delivery } from "./dataplane/measure.js";
import { type DataplaneReport, fmt, formatDataplane, summarize } from "./dataplane/report.js";
import {
  DEFAULT_SCENARIOS,
  FLOW_SCENARIOS,
  runDaemon,
  runPlain,
  runStatistic,
  SCENARIOS,
  type ScenarioName,
} from "./dataplane/scenarios.js";

export { dataplaneUnavailable } from "./dataplane/context.js";
export { type DataplaneReport, formatDataplane } from "./dataplane/report.js";
export { DEFAULT_SCENARIOS, SCENARIOS, type ScenarioName } from "./dataplane/scenarios.js";

export async function benchDataplane(
  partial: Partial<DataplaneOptions> = {},
): Promise<DataplaneReport> {
  const options: DataplaneOptions = { ...DEFAULT_OPTIONS, only: DEFAULT_SCENARIOS, ...partial };
  if (options.fillPackets > 65536) throw new Error("fillPackets must be <= 65536 (queue-maxlen)");
  const loadAverage = loadavg()[0];
  const ctx = createContext(options);
  const defaultQlength = daemonDefaultQlength(ctx);
  const runs = Object.fromEntries(SCENARIOS.map((name) => [name, []])) as unknown as Record<
    ScenarioName,
    unknown[]
  >;
  const notes: string[] = [];
  /** Capacity and 1 / CPU per packet draining, per scenario and round (NaN: the run
   * failed), for per-round ratios. */
  const byRound = () =>
    Object.fromEntries(
      SCENARIOS.map((name) => [name, new Array<number>(options.rounds).fill(Number.NaN)]),
    ) as Record<ScenarioName, number[]>;
  const capacityByRound = byRound();
  const cpuCapacityByRound = byRound();
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
            const flows = FLOW_SCENARIOS[name];
            const r = await runDaemon(
              ctx,
              name === "daemon1" ? 1 : 64,
              flows?.count,
              flows?.onBenchPort,
            );
            runs[name].push(r);
            capacityByRound[name][round - 1] = r.capacity.pps;
            cpuCapacityByRound[name][round - 1] = 1 / r.capacity.usPerPacket;
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

  const { medians, ratios, perRound } = summarize(runs, capacityByRound, cpuCapacityByRound);
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
      defaultQlength,
      loadAverage,
      kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    },
    medians,
    ratios,
    perRound,
    rounds: runs,
    notes,
  };
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
    const only = values.only?.split(",").map((s) => s.trim()) ?? [...DEFAULT_SCENARIOS];
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
