// The data-plane bench's setting: its constants and options, what a run needs (the
// topology of namespaces, the sender, the sinks, a state directory), and whether this
// machine can run it at all.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildLbTopology,
  CLIENT4,
  type LbTopology,
  target4,
  VIP4,
} from "../../test/helpers/lbtopo.js";
import { isRoot } from "../../test/helpers/netns.js";
import { macOf, SinkCounters, UdpSender } from "../traffic.js";
import type { ScenarioName } from "./scenarios.js";

export const LB_NAME = "bench";
export const DST_PORT = 9000;
export const FIRST_SRC_PORT = 10_000;
export const FLOWS = 64;
export const PAYLOAD = 64;
export const QUEUE = 0;

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
  only: [],
  log: (line) => process.stderr.write(`${line}\n`),
};

export interface BenchContext {
  topo: LbTopology;
  stateDir: string;
  workDir: string;
  sender: UdpSender;
  sink: SinkCounters;
  options: DataplaneOptions;
  /** The service flows' load balancers exist (created once, on the first flow scenario). */
  serviceLbsReady?: boolean;
}

export function have(cmd: string): boolean {
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

/** Work directories still there: removed if the bench exits on a signal or an error. */
const liveWorkDirs = new Set<string>();
process.on("exit", () => {
  for (const dir of liveWorkDirs) rmSync(dir, { recursive: true, force: true });
});

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
