// Traffic helpers of the data-plane benchmark: a paced UDP sender (python3, AF_PACKET),
// packet counters in the target namespaces (nft named counters, no socket), and readers
// for the kernel's NFQUEUE counters and a process's CPU time.
//
// Every load is bounded twice: the sender stops after a fixed packet count and after a
// time limit of its own, and the harness kills it if it outlives that.
import { readdirSync, readFileSync } from "node:fs";
import { parseQueueProcStats, type QueueProcStats } from "../src/nfqueue/procstats.js";
import type { Netns } from "../test/helpers/netns.js";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = values.slice().sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The MAC address of an interface inside a namespace. */
export function macOf(ns: Netns, ifname: string): string {
  const links = JSON.parse(ns.exec("ip", ["-j", "link", "show", "dev", ifname])) as {
    address: string;
  }[];
  return links[0].address;
}

export interface UdpFlows {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  /** Source ports firstSrcPort .. firstSrcPort + flows - 1, one packet per flow in turn. */
  firstSrcPort: number;
  flows: number;
  dstPort: number;
  /** UDP payload bytes (64 → a 92-byte IP packet, a 106-byte Ethernet frame). */
  payload: number;
}

export interface SendResult {
  /** Packets handed to the interface. */
  sent: number;
  /** From the first packet to the last (the sender's own clock). */
  seconds: number;
  /** send() calls that failed (counted, not retried). */
  errors: number;
  /** Times the sender fell more than 20 ms behind its schedule and restarted it. */
  resets: number;
}

/**
 * The sender proper, run with python3 inside the client namespace: an AF_PACKET raw socket
 * on the client's veth (qdisc bypassed), one prebuilt Ethernet/IPv4/UDP frame per flow
 * with valid checksums, sent round robin over the flows. Pacing: every 0.25 ms of
 * schedule it sends the packets due (50 at 200k pps), sleeping and then spinning up to
 * the due time. After a stall (its vCPU descheduled: on this shared VM, stalls of 10-30 ms
 * happen every second) it catches up at full speed, as a client on another machine would
 * have kept sending; a stall longer than 20 ms (4000 packets at 200k pps, well under the
 * daemon's default queue of 16384) restarts the schedule instead, so the offered rate
 * drops and is reported. Bounded by a packet count and a time limit. Unpaced it reaches
 * 700-850k pps through plain routing here.
 */
const SENDER_PY = String.raw`
import json, socket, struct, sys, time
a = json.loads(sys.argv[1])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF
mac = lambda m: bytes.fromhex(m.replace(":", ""))
src, dst = socket.inet_aton(a["srcIp"]), socket.inet_aton(a["dstIp"])
frames = []
for f in range(a["flows"]):
    data = b"\x42" * a["payload"]
    ulen = 8 + len(data)
    sport = a["firstSrcPort"] + f
    udp = struct.pack("!HHHH", sport, a["dstPort"], ulen, 0) + data
    c = csum(src + dst + struct.pack("!BBH", 0, 17, ulen) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    frames.append(mac(a["dstMac"]) + mac(a["srcMac"]) + b"\x08\x00" + ip + udp)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((a["dev"], 0))
try:
    s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
except OSError:
    pass
n, pps, flows = a["count"], a["pps"], len(frames)
burst = max(1, round(pps * 0.00025)) if pps > 0 else 256
step = burst / pps if pps > 0 else 0.0
send, clock, sleep = s.send, time.perf_counter, time.sleep
sent = errors = resets = 0
t0 = clock()
deadline = t0 + a["maxSeconds"]
due = t0
while sent < n:
    now = clock()
    if now > deadline:
        break
    if pps > 0:
        if now > due + 0.02:
            due = now
            resets += 1
        elif due - now > 0.0002:
            sleep(due - now - 0.0001)
        while clock() < due:
            pass
        due += step
    k = min(burst, n - sent)
    for i in range(sent, sent + k):
        try:
            send(frames[i % flows])
        except OSError:
            errors += 1
    sent += k
print(json.dumps({"sent": sent - errors, "seconds": clock() - t0, "errors": errors, "resets": resets}))
`;

/**
 * A single-core UDP sender in the client namespace (python3, AF_PACKET), pinned to CPU 0
 * when taskset is there. trafgen was tried first: its --rate sends each second's packets
 * in one burst at the start of the second (~860k pps, then silence) and its --gap sleeps
 * per packet, which caps it at ~33k pps on this VM: neither offers a steady 200k pps.
 */
export class UdpSender {
  private readonly pin: string[];

  constructor(
    private readonly ns: Netns,
    private readonly dev: string,
    private readonly flows: UdpFlows,
    pinCpu?: number,
  ) {
    this.pin = pinCpu === undefined ? [] : ["taskset", "-c", String(pinCpu)];
  }

  /** Sends `packets` packets at `pps` (0: as fast as it can); never runs longer than
   * twice the schedule + 2 s. */
  send(packets: number, pps: number): Promise<SendResult> {
    if (!Number.isInteger(packets) || packets < 1) throw new Error(`bad packet count ${packets}`);
    const maxSeconds = pps > 0 ? (packets / pps) * 2 + 2 : 10;
    const args = JSON.stringify({ ...this.flows, dev: this.dev, count: packets, pps, maxSeconds });
    const argv = [...this.pin, "python3", "-c", SENDER_PY, args];
    return new Promise((resolve, reject) => {
      const child = this.ns.spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr?.on("data", (d: Buffer) => {
        err += d.toString();
      });
      // The script stops itself at maxSeconds; this only guards against a hang.
      const timer = setTimeout(() => child.kill("SIGKILL"), (maxSeconds + 10) * 1000);
      child.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(out) as SendResult);
        } catch {
          reject(new Error(`sender exited ${code}: ${(err || out).trim()}`));
        }
      });
    });
  }
}

/**
 * Counts UDP packets to `port` arriving at each target: an nft input chain with a named
 * counter that then drops them, so no socket (and no socket-buffer loss) is involved.
 * Counters are read as deltas; nothing is reset.
 */
export class SinkCounters {
  constructor(
    private readonly targets: readonly Netns[],
    port: number,
  ) {
    const ruleset = [
      "table inet nflb_bench_sink {",
      "  counter delivered { }",
      "  chain input {",
      "    type filter hook input priority 0;",
      `    udp dport ${port} counter name "delivered" drop`,
      "  }",
      "}",
      "",
    ].join("\n");
    for (const t of targets) t.exec("nft", ["-f", "-"], ruleset);
  }

  /** Packets counted so far at each target. */
  read(): number[] {
    return this.targets.map((t) => {
      const doc = JSON.parse(
        t.exec("nft", ["-j", "list", "counter", "inet", "nflb_bench_sink", "delivered"]),
      ) as { nftables: { counter?: { packets: number } }[] };
      const entry = doc.nftables.find((e) => e.counter !== undefined);
      if (!entry?.counter) throw new Error(`no sink counter in ${t.name}`);
      return entry.counter.packets;
    });
  }

  total(): number {
    return this.read().reduce((a, b) => a + b, 0);
  }

  /** Waits until the total stops growing (in-flight packets arrive), at most maxMs. */
  async settle(maxMs = 1_500, stepMs = 100): Promise<number> {
    let last = this.total();
    const end = Date.now() + maxMs;
    while (Date.now() < end) {
      await sleep(stepMs);
      const now = this.total();
      if (now === last) return now;
      last = now;
    }
    return last;
  }
}

/**
 * The NFQUEUE counters of the network namespace `pid` lives in: /proc/<pid>/net is that
 * process's namespace view, so the harness reads it without entering the namespace.
 */
export function queueStatsOf(pid: number): QueueProcStats[] {
  try {
    return parseQueueProcStats(readFileSync(`/proc/${pid}/net/netfilter/nfnetlink_queue`, "utf8"));
  } catch {
    return [];
  }
}

export interface CpuTime {
  /** Seconds in user mode, all threads (including ones that exited). */
  user: number;
  /** Seconds in kernel mode, all threads. */
  system: number;
}

const CLOCK_TICKS = 100; // USER_HZ: getconf CLK_TCK, 100 on every Linux architecture in use

/** utime + stime of a process from /proc/<pid>/stat (10 ms resolution). */
export function cpuTimeOf(pid: number): CpuTime {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start at ") ".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // state is field 3; utime and stime are fields 14 and 15 (1-based) of the whole line.
  return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS };
}

/** On-CPU nanoseconds of all live threads of a process (/proc/<pid>/task/<tid>/schedstat). */
export function schedNsOf(pid: number): number {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // thread exited between readdir and read
    }
  }
  return total;
}

/** Packets the kernel dropped at the per-CPU backlog (global, summed over CPUs). */
export function softnetDropped(): number {
  try {
    return readFileSync("/proc/net/softnet_stat", "utf8")
      .trim()
      .split("\n")
      .reduce((sum, line) => sum + Number.parseInt(line.split(/\s+/)[1], 16), 0);
  } catch {
    return 0;
  }
}
