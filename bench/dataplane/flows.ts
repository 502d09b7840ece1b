// The flow scenarios' flows: 1,999 services that do not match the bench traffic and the
// one that does, stored through the flow store as `nflb flow-set` would.
import { type FlowInput, type FlowSpec, parseFlow } from "../../src/flows/index.js";
import { readFlows, updateFlows } from "../../src/state/flowstore.js";
import { tryOpenState } from "../../src/state/store.js";
import { VIP4 } from "../../test/helpers/lbtopo.js";
import { sleep } from "../traffic.js";
import { type BenchContext, DST_PORT, LB_NAME } from "./context.js";
import { type Daemon, nflb } from "./daemon.js";

/** Load balancers (states) the non-matching service flows point to, besides LB_NAME. */
const SERVICE_LBS = ["svc-web", "svc-dns", "svc-sip", "svc-api"];

/**
 * The flows of a flow scenario: `n - 1` services that do not match the bench traffic
 * (UDP 198.18.0.2:10000-10063 -> VIP:9000, payload bytes 0x42), every one of higher
 * priority, then the one flow that matches it, of the lowest priority (0). The services
 * are what one daemon in front of many would carry, one in ten of each kind: HTTP(S)
 * (two in ten), application port ranges, SSH for new connections only (a TCP flags byte
 * match), DNS queries only (a byte match on the QR bit) and SCTP signalling, each on a
 * /32 of its own (10.64.0.0/13), DNS, SIP/RTP and databases on a /24 of their own
 * (10.96.0.0/13), and services on the bench VIP on other ports and protocols (TCP 9000,
 * UDP 9001-9500, SCTP 9000, TCP/UDP 20000+).
 *
 * `onBenchPort` (flows2000vip) makes 208 of them share the bench's VIP, protocol and
 * port: 200 that serve other client networks only (100.64.k.0/24) instead of the
 * databases, and 8 told apart by the first payload byte (0x01..0x08; the bench sends
 * 0x42) instead of 8 SCTP services. No set of one dimension is then small, and the byte
 * matches are tried one by one for every packet: the matcher's harder case.
 */
export function benchFlowSpecs(n: number, onBenchPort = false): FlowSpec[] {
  const inputs: FlowInput[] = [];
  for (let i = 0; i < n - 1; i++) {
    const k = Math.floor(i / 10);
    const host = `10.${64 + (i >> 8)}.${i & 255}.10`;
    const net = `10.${96 + (i >> 8)}.${i & 255}.0/24`;
    const base = {
      name: `svc${String(i).padStart(4, "0")}`,
      target: SERVICE_LBS[i % SERVICE_LBS.length],
      priority: n - i,
    };
    let flow: Omit<FlowInput, "name" | "target" | "priority">;
    switch (i % 10) {
      case 0:
      case 1:
        flow = { protocols: "tcp", dsts: host, dports: "80,443" };
        break;
      case 2: {
        const lo = 8000 + (k % 50) * 20;
        flow = { protocols: "tcp", dsts: host, dports: `${lo}-${lo + 19}` };
        break;
      }
      case 3:
        flow = { protocols: "tcp,udp", dsts: net, dports: "53" };
        break;
      case 4:
        flow = { protocols: "udp", dsts: net, dports: "5060,16384-32767" };
        break;
      case 5:
        flow = { protocols: "tcp", dsts: host, dports: "22", match: "tcp[13:1] & 0x02 = 0x02" };
        break;
      case 6:
        flow = { protocols: "udp", dsts: host, dports: "53", match: "udp[10:1] & 0x80 = 0x00" };
        break;
      case 7: {
        const lo = 9001 + (k % 50) * 10;
        flow = [
          { protocols: "tcp", dsts: VIP4, dports: `${DST_PORT}` },
          { protocols: "udp", dsts: VIP4, dports: `${lo}-${lo + 9}` },
          { protocols: "sctp", dsts: VIP4, dports: `${DST_PORT},3868` },
          { protocols: "tcp,udp", dsts: VIP4, dports: `${20_000 + k}` },
        ][k % 4];
        break;
      }
      case 8:
        flow = onBenchPort
          ? {
              protocols: "udp",
              dsts: VIP4,
              dports: `${DST_PORT}`,
              srcs: `100.${64 + (k >> 8)}.${k & 255}.0/24`,
            }
          : { protocols: "tcp", dsts: net, dports: "3306,5432,6379" };
        break;
      default:
        flow =
          onBenchPort && k < 8
            ? {
                protocols: "udp",
                dsts: VIP4,
                dports: `${DST_PORT}`,
                match: `udp[8:1] = 0x0${k + 1}`,
              }
            : { protocols: "sctp", dsts: host, dports: "2905,3868" };
    }
    inputs.push({ ...base, ...flow });
  }
  inputs.push({
    name: "bench",
    target: LB_NAME,
    priority: 0,
    protocols: "udp",
    dsts: VIP4,
    dports: `${DST_PORT}`,
  });
  return inputs.map(parseFlow);
}

/** Runs `fn` with NFLB_STATE_DIR set to the bench's state directory (the flow store reads
 * it at each call), and puts the variable back afterwards. */
function inStateDir<T>(ctx: BenchContext, fn: () => T): T {
  const saved = process.env.NFLB_STATE_DIR;
  process.env.NFLB_STATE_DIR = ctx.stateDir;
  try {
    return fn();
  } finally {
    if (saved === undefined) Reflect.deleteProperty(process.env, "NFLB_STATE_DIR");
    else process.env.NFLB_STATE_DIR = saved;
  }
}

/** Creates the service flows' load balancers (flows must point to existing ones), once. */
export function ensureServiceLbs(ctx: BenchContext): void {
  if (ctx.serviceLbsReady) return;
  for (const name of SERVICE_LBS) {
    nflb(ctx, ["init", "--name", name]);
    nflb(ctx, ["activate", "--name", name, "1", "2", "3"]);
  }
  ctx.serviceLbsReady = true;
}

/**
 * Replaces the stored flows, in-process through the flow store (as `nflb flow-set` does,
 * without a process per flow): the same validation, compiled once before the file is
 * replaced. Checks first that every target load balancer exists, as flow-set does.
 * Returns the milliseconds updateFlows took.
 */
export function storeFlows(ctx: BenchContext, flows: readonly FlowSpec[]): number {
  return inStateDir(ctx, () => {
    for (const target of new Set(flows.map((f) => f.target))) {
      const state = tryOpenState(target);
      if (!state) throw new Error(`flows: no load balancer named "${target}"`);
      state.close();
    }
    const t0 = performance.now();
    const stored = updateFlows(() => flows.slice());
    const ms = performance.now() - t0;
    if (stored.length !== flows.length) {
      throw new Error(`flows: ${stored.length} stored of ${flows.length}`);
    }
    return ms;
  });
}

/** Removes every flow, so the other daemon scenarios balance without any. */
export function clearFlows(ctx: BenchContext): void {
  inStateDir(ctx, () => {
    if (readFlows().length > 0) updateFlows(() => []);
  });
}

/** Packets sent after each start of the daemon, before anything is measured. */
const WARMUP_PACKETS = 2_000;

/**
 * Sends a few packets to a freshly started daemon and waits until they are through: it
 * compiles its flows at the first batch (2,000 flows: ~100-200 ms of CPU with a cold JIT,
 * which would otherwise land in the first measurement) and the JIT warms up. With flows,
 * also waits for the log line that says they were compiled.
 */
export async function warmUp(ctx: BenchContext, daemon: Daemon, flowCount: number): Promise<void> {
  await ctx.sender.send(WARMUP_PACKETS, ctx.options.cpuPps);
  if (flowCount > 0) {
    const deadline = Date.now() + 5_000;
    while (!/queue \d+: \d+ flows/.test(daemon.output) && Date.now() < deadline) await sleep(20);
  }
  await ctx.sink.settle();
}

/** Throws unless the daemon's log (--loglevel info) says it compiled exactly `n` flows. */
export function checkFlowsLoaded(daemon: Daemon, n: number): void {
  if (daemon.output.includes("flows not applied")) {
    throw new Error(`the daemon rejected the ${n} flows`);
  }
  const loaded = [...daemon.output.matchAll(/queue \d+: (\d+) flows/g)];
  const last = loaded[loaded.length - 1];
  if (last === undefined || Number(last[1]) !== n) {
    throw new Error(`the daemon did not report ${n} flows (${last?.[0] ?? "no flows line"})`);
  }
}
