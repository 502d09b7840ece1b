// The report: medians over the rounds, ratios, and the tables printed.
import { median } from "../traffic.js";
import type { Delivery } from "./measure.js";
import type { DaemonRun, ScenarioName } from "./scenarios.js";
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
    /** `nflb lb`'s default --qlength (from its --help), used by the first daemon start. */
    defaultQlength?: number;
    /** 1-minute load average when the bench started: other work on the machine. */
    loadAverage: number;
    kernel: string;
  };
  /** Medians over the rounds. */
  medians: Record<string, Record<string, number>>;
  ratios: Record<string, number>;
  /** The flow scenarios' capacity ratios round by round (each pair ran one after the
   * other; NaN where a run failed): how much of a median ratio is noise. */
  perRound: Record<string, number[]>;
  rounds: Record<ScenarioName, unknown[]>;
  notes: string[];
}

/** Medians per scenario, the ratios between scenarios, and the capacity ratios per round. */
export function summarize(
  runs: Record<ScenarioName, unknown[]>,
  capacityByRound: Record<ScenarioName, number[]>,
  cpuCapacityByRound: Record<ScenarioName, number[]>,
): Pick<DataplaneReport, "medians" | "ratios" | "perRound"> {
  const medians: Record<string, Record<string, number>> = {};
  if (runs.plain.length) medians.plain = deliveryMedians(runs.plain as Delivery[]);
  if (runs.statistic.length) medians.statistic = deliveryMedians(runs.statistic as Delivery[]);
  for (const [name] of DAEMON_LABELS) {
    if (runs[name].length) medians[name] = daemonMedians(runs[name] as DaemonRun[]);
  }
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
    // The goal: 2,000 flows (the matching one last) keep >= 90% of one flow's rate.
    flows2000OverFlows1Capacity: ratio(medians.flows2000?.capacityPps, medians.flows1?.capacityPps),
    // The same from the daemon's CPU time while draining (schedstat): the rate it would
    // reach with a whole CPU, blind to the stalls of a shared vCPU, so far less noisy.
    flows2000OverFlows1CpuCapacity: ratio(
      medians.flows1?.capacityUsPerPacket,
      medians.flows2000?.capacityUsPerPacket,
    ),
    flows2000OverFlows1Delivered: ratio(
      medians.flows2000?.deepDeliveredPps,
      medians.flows1?.deepDeliveredPps,
    ),
    flows2000OverFlows1CpuPerPacket: ratio(
      medians.flows2000?.cpuUsPerPacket,
      medians.flows1?.cpuUsPerPacket,
    ),
    flows2000vipOverFlows1Capacity: ratio(
      medians.flows2000vip?.capacityPps,
      medians.flows1?.capacityPps,
    ),
    flows2000vipOverFlows1CpuCapacity: ratio(
      medians.flows1?.capacityUsPerPacket,
      medians.flows2000vip?.capacityUsPerPacket,
    ),
    flows1OverDaemonCapacity: ratio(medians.flows1?.capacityPps, medians.daemon64?.capacityPps),
    flows2000OverDaemonCapacity: ratio(
      medians.flows2000?.capacityPps,
      medians.daemon64?.capacityPps,
    ),
    flows1OverDaemonDelivered: ratio(
      medians.flows1?.deepDeliveredPps,
      medians.daemon64?.deepDeliveredPps,
    ),
    flows2000OverDaemonDelivered: ratio(
      medians.flows2000?.deepDeliveredPps,
      medians.daemon64?.deepDeliveredPps,
    ),
  };
  const perRound: Record<string, number[]> = {};
  for (const [key, a, b, values] of [
    ["flows2000OverFlows1Capacity", "flows2000", "flows1", capacityByRound],
    ["flows2000OverFlows1CpuCapacity", "flows2000", "flows1", cpuCapacityByRound],
    ["flows2000vipOverFlows1Capacity", "flows2000vip", "flows1", capacityByRound],
    ["flows2000vipOverFlows1CpuCapacity", "flows2000vip", "flows1", cpuCapacityByRound],
    ["flows1OverDaemonCapacity", "flows1", "daemon64", capacityByRound],
    ["flows2000OverDaemonCapacity", "flows2000", "daemon64", capacityByRound],
  ] as const) {
    if (runs[a].length > 0 && runs[b].length > 0) {
      perRound[key] = values[a].map((v, i) => v / values[b][i]);
    }
  }
  return { medians, ratios, perRound };
}

function medianOf<T>(runs: T[], pick: (t: T) => number | undefined): number {
  return median(runs.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v)));
}

export function deliveryMedians(runs: Delivery[]): Record<string, number> {
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

export function daemonMedians(runs: DaemonRun[]): Record<string, number> {
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

export function fmt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "-";
  return Math.round(n).toLocaleString("en-US");
}

function ratioText(n: number): string {
  return Number.isFinite(n) ? n.toFixed(2) : "-";
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

/** The daemon scenarios as the tables name them (all batch 64 but daemon1). */
export const DAEMON_LABELS = [
  ["daemon64", "batch 64"],
  ["flows1", "batch 64, 1 flow"],
  ["flows2000", "batch 64, 2,000 flows"],
  ["flows2000vip", "batch 64, 2,000 flows, 209 on VIP:9000"],
  ["daemon1", "batch 1"],
] as const;

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
  for (const [key, label] of DAEMON_LABELS) {
    const m = r.medians[key];
    if (!m) continue;
    row(`nflb lb, ${label}, qlength ${s.defaultQlength ?? "default"}`, m, "", true);
    row(`nflb lb, ${label}, qlength 65536`, m, "deep", true);
  }
  out.push(...table(rows));

  const daemonRows: string[][] = [
    ["daemon", "capacity pps", "us/packet draining", "us/packet at fixed rate", "fixed rate pps"],
  ];
  for (const [key, label] of DAEMON_LABELS) {
    const m = r.medians[key];
    if (!m) continue;
    daemonRows.push([
      label,
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
    flows2000OverFlows1Capacity: "capacity, 2,000 flows / 1 flow (goal >= 0.90)",
    flows2000OverFlows1CpuCapacity: "same from CPU time (1 / us per packet draining)",
    flows2000OverFlows1Delivered: "delivered (qlength 65536), 2,000 flows / 1 flow",
    flows2000OverFlows1CpuPerPacket: "CPU per packet, 2,000 flows / 1 flow",
    flows2000vipOverFlows1Capacity: "capacity, 2,000 flows (209 on VIP:9000) / 1 flow",
    flows2000vipOverFlows1CpuCapacity: "same from CPU time",
    flows1OverDaemonCapacity: "capacity, 1 flow / no flows",
    flows2000OverDaemonCapacity: "capacity, 2,000 flows / no flows",
    flows1OverDaemonDelivered: "delivered (qlength 65536), 1 flow / no flows",
    flows2000OverDaemonDelivered: "delivered (qlength 65536), 2,000 flows / no flows",
  };
  for (const [key, label] of Object.entries(ratioLabels)) {
    const v = r.ratios[key];
    if (!Number.isFinite(v)) continue;
    const rounds = r.perRound?.[key];
    const each = rounds ? `  (rounds: ${rounds.map((x) => ratioText(x)).join(", ")})` : "";
    out.push(`${label.padEnd(50)} ${v.toFixed(2)}${each}`);
  }
  for (const note of r.notes) out.push(`note: ${note}`);
  return out.join("\n");
}
