// NfQueue end to end in two namespaces: client --veth-- lb. In lb an iptables-nft rule
// queues UDP to port 5000 on queue 3; a child process (this file, in a child role) marks
// each packet by its source port; nft counters on the input hook count the marks.
// All traffic stays between the namespaces this test creates.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  PROC_NFQUEUE,
  parseQueueProcStats,
  readQueueProcStats,
} from "../../src/nfqueue/procstats.js";
import { NfQueue, type PacketBatch, type VerdictWriter } from "../../src/nfqueue/queue.js";
import { isRoot, link, type Netns, Topology } from "../helpers/netns.js";

const QUEUE = 3;
const PORT = 5000;
const LB_IP = "10.98.0.2";
const CLIENT_IP = "10.98.0.1";
const SELF = fileURLToPath(import.meta.url);

// ---------------------------------------------------------------- child roles

/** Marks each packet (source port % 2) + 1; drops what is too short to read. */
function markBySourcePort(b: PacketBatch, v: VerdictWriter): void {
  const buf = b.buf;
  for (let i = 0; i < b.count; i++) {
    const off = b.payloadOffset[i];
    const ihl = (buf[off] & 0x0f) * 4;
    if (b.payloadLength[i] < ihl + 4) {
      v.drop(b.ids[i]);
      continue;
    }
    const sport = (buf[off + ihl] << 8) | buf[off + ihl + 1];
    v.accept(b.ids[i], (sport % 2) + 1);
  }
}

/** The namespace's UDP MIB lines (InDatagrams, RcvbufErrors, ...), for failure messages. */
function udpSnmp(): string {
  return readFileSync("/proc/net/snmp", "utf8")
    .split("\n")
    .filter((l) => l.startsWith("Udp:"))
    .join(" | ");
}
function emit(line: string): void {
  process.stdout.write(`${line}\n`);
}

function nextLine(): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin });
    rl.once("line", (l) => {
      rl.close();
      resolve(l);
    });
    rl.once("close", () => resolve(""));
  });
}

async function lbRole(): Promise<void> {
  const q = NfQueue.open({ queue: QUEUE, maxLen: 65536 });
  // Verdicts deliver a whole batch at once: room for all test packets in the socket.
  const sock = dgram.createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
  let received = 0;
  sock.on("message", () => {
    received++;
  });
  await new Promise<void>((r) => sock.bind(PORT, LB_IP, r));
  const seen = { prerouting: 0, ipv4: 0, ifindexes: [] as number[], maxPayload: 0 };
  q.start((b, v) => {
    for (let i = 0; i < b.count; i++) {
      if (b.hooks[i] === 0) seen.prerouting++;
      if (b.hwProtocol[i] === 0x0800 && b.family[i] === 2) seen.ipv4++;
      if (!seen.ifindexes.includes(b.inIfindex[i])) seen.ifindexes.push(b.inIfindex[i]);
      seen.maxPayload = Math.max(seen.maxPayload, b.payloadLength[i]);
    }
    markBySourcePort(b, v);
  });
  emit(`READY ${q.portId}`);
  const expect = Number((await nextLine()).split(" ")[1] ?? 0);
  // Accepted packets reach the UDP socket at once; give the loop time to read them.
  const until = Date.now() + 5000;
  while (received < expect && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  const drained = q.drain(markBySourcePort);
  const proc = readQueueProcStats();
  const udp = `rcvbuf ${sock.getRecvBufferSize()} ${udpSnmp()}`;
  q.close();
  sock.close();
  emit(`RESULT ${JSON.stringify({ stats: q.stats, received, drained, proc, seen, udp })}`);
}

async function clientRole(): Promise<void> {
  const count = Number(process.env.NFLB_COUNT);
  const nports = Number(process.env.NFLB_NPORTS);
  const size = Number(process.env.NFLB_SIZE);
  const sockets: dgram.Socket[] = [];
  for (let k = 0; k < nports; k++) {
    const s = dgram.createSocket("udp4");
    await new Promise<void>((r) => s.bind(40000 + k, CLIENT_IP, r));
    sockets.push(s);
  }
  const payload = Buffer.alloc(size, 0x61);
  let sent = 0;
  let failed = 0;
  // A window of in-flight sends: fast, yet bounded in memory.
  const window = 64;
  let inflight = 0;
  let wake: (() => void) | undefined;
  for (let i = 0; i < count; i++) {
    while (inflight >= window) await new Promise<void>((r) => (wake = r));
    inflight++;
    sockets[i % nports].send(payload, PORT, LB_IP, (err) => {
      if (err) failed++;
      else sent++;
      inflight--;
      wake?.();
      wake = undefined;
    });
  }
  while (inflight > 0) await new Promise<void>((r) => (wake = r));
  for (const s of sockets) s.close();
  emit(`SENT ${JSON.stringify({ sent, failed })}`);
}

/** Tries to open the queue and prints the error message (for the error-path tests). */
function openRole(): void {
  try {
    const q = NfQueue.open({ queue: QUEUE });
    q.close();
    emit("OPENED");
  } catch (err) {
    emit(`ERROR ${(err as Error).message}`);
  }
}

/** A handler that throws: drain() must drop the batch (fail closed) and rethrow. */
async function failClosedRole(): Promise<void> {
  const q = NfQueue.open({ queue: QUEUE, maxLen: 1024 });
  emit(`READY ${q.portId}`);
  await nextLine();
  const queued = readQueueProcStats().find((s) => s.queue === QUEUE)?.queueTotal;
  let errors = 0;
  let message = "";
  for (let i = 0; i < 10; i++) {
    try {
      if (
        q.drain(() => {
          throw new Error("boom");
        }) === 0
      )
        break;
    } catch (err) {
      errors++;
      message = (err as Error).message;
    }
  }
  const left = readQueueProcStats().find((s) => s.queue === QUEUE)?.queueTotal;
  q.close();
  emit(`RESULT ${JSON.stringify({ queued, left, errors, message, stats: q.stats })}`);
}

/** Fills the queue without reading, then on "GO" drains it and reports the rate. */
async function benchRole(): Promise<void> {
  const batchSize = Number(process.env.NFLB_BATCH ?? 64);
  const q = NfQueue.open({ queue: QUEUE, maxLen: 65536, rcvbufBytes: 256 << 20, batchSize });
  emit(`READY ${q.portId}`);
  await nextLine();
  const queued = readQueueProcStats().find((s) => s.queue === QUEUE);
  let n = 0;
  const t0 = process.hrtime.bigint();
  for (;;) {
    const d = q.drain(markBySourcePort);
    n += d;
    if (d === 0) break;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  const left = readQueueProcStats().find((s) => s.queue === QUEUE);
  q.close();
  emit(
    `RESULT ${JSON.stringify({ drained: n, ms: ns / 1e6, pps: Math.round(n / (ns / 1e9)), queued, left, stats: q.stats })}`,
  );
}

// ---------------------------------------------------------------- parent side

const children = new Set<ChildProcess>();

interface Child {
  proc: ChildProcess;
  waitFor(prefix: string, timeoutMs: number): Promise<string>;
  send(line: string): void;
}

function startChild(
  ns: Netns,
  role: string,
  env: Record<string, string> = {},
  wrap: string[] = [],
): Child {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, NFLB_E2E_ROLE: role, ...env };
  delete childEnv.NODE_TEST_CONTEXT; // the child is a plain script, not a test file
  const cmd = wrap.length ? wrap[0] : process.execPath;
  const args = wrap.length ? [...wrap.slice(1), process.execPath, SELF] : [SELF];
  const proc = ns.spawn(cmd, args, { env: childEnv, stdio: ["pipe", "pipe", "pipe"] });
  children.add(proc);
  proc.on("exit", () => children.delete(proc));
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let stderr = "";
  proc.stderr?.on("data", (d) => {
    stderr += d;
  });
  const stdout = proc.stdout;
  if (!stdout) throw new Error("child without stdout pipe");
  createInterface({ input: stdout }).on("line", (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  let exited = false;
  proc.on("exit", () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    proc,
    async waitFor(prefix, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = lines.find((l) => l.startsWith(prefix));
        if (hit !== undefined) return hit.slice(prefix.length).trim();
        if (exited) throw new Error(`${role} child exited before "${prefix}": ${stderr}`);
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(`${role} child: no "${prefix}" within ${timeoutMs} ms: ${stderr}`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, left);
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
    },
    send(line) {
      proc.stdin?.write(`${line}\n`);
    },
  };
}

function nftCounters(ns: Netns): Record<string, number> {
  const j = JSON.parse(ns.exec("nft", ["-j", "list", "counters", "table", "inet", "nflbtest"])) as {
    nftables: { counter?: { name: string; packets: number } }[];
  };
  const out: Record<string, number> = {};
  for (const e of j.nftables) if (e.counter) out[e.counter.name] = e.counter.packets;
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const role = process.env.NFLB_E2E_ROLE;
if (role === "lb") await lbRole();
else if (role === "client") await clientRole();
else if (role === "open") openRole();
else if (role === "bench") await benchRole();
else if (role === "failclosed") await failClosedRole();
else registerTests();

function registerTests(): void {
  const skip = !isRoot() && process.env.CI !== "true" ? "needs root (runs in CI)" : false;

  describe("nfqueue end to end", { skip }, () => {
    const topo = new Topology();
    let client: Netns;
    let lb: Netns;

    before(() => {
      client = topo.add("cli");
      lb = topo.add("lb");
      link(client, "veth0", [`${CLIENT_IP}/24`], lb, "veth0", [`${LB_IP}/24`]);
      // Static neighbour: no ARP queue (unres_qlen) to drop the first burst.
      const mac = (
        JSON.parse(lb.exec("ip", ["-j", "link", "show", "veth0"])) as { address: string }[]
      )[0].address;
      client.exec("ip", [
        "neigh",
        "replace",
        LB_IP,
        "lladdr",
        mac,
        "dev",
        "veth0",
        "nud",
        "permanent",
      ]);
      // This kernel has no nft queue expression: the queue rule is xt NFQUEUE via iptables-nft.
      lb.exec("iptables-nft", [
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-p",
        "udp",
        "--dport",
        String(PORT),
        "-j",
        "NFQUEUE",
        "--queue-num",
        String(QUEUE),
      ]);
      lb.exec(
        "nft",
        ["-f", "-"],
        `table inet nflbtest {
          counter m1 {}
          counter m2 {}
          counter other {}
          chain input {
            type filter hook input priority 0; policy accept;
            udp dport ${PORT} meta mark 1 counter name "m1" accept
            udp dport ${PORT} meta mark 2 counter name "m2" accept
            udp dport ${PORT} counter name "other"
          }
        }`,
      );
    });

    after(() => {
      for (const c of children) c.kill("SIGKILL");
      topo.destroy();
    });

    test("marks set by verdicts reach the input hook, every packet counted", async () => {
      const count = 2000;
      const nports = 15;
      const lbc = startChild(lb, "lb");
      const portId = Number(await lbc.waitFor("READY", 15_000));
      // The queue is visible, per namespace, while bound.
      const live = parseQueueProcStats(lb.exec("cat", [PROC_NFQUEUE])).find(
        (s) => s.queue === QUEUE,
      );
      assert.ok(live, "queue 3 listed in the lb namespace");
      assert.equal(live.portId, portId);
      assert.equal(live.copyMode, 2);
      assert.equal(live.copyRange, 256);
      assert.equal(
        client.tryExec("cat", [PROC_NFQUEUE]).stdout.trim(),
        "",
        "not in other namespaces",
      );

      const cl = startChild(client, "client", {
        NFLB_COUNT: String(count),
        NFLB_NPORTS: String(nports),
        NFLB_SIZE: "18",
      });
      const sent = JSON.parse(await cl.waitFor("SENT", 30_000)) as { sent: number; failed: number };
      assert.deepEqual(sent, { sent: count, failed: 0 });

      const expected = { m1: 0, m2: 0, other: 0 };
      for (let i = 0; i < count; i++) {
        if ((40000 + (i % nports)) % 2 === 0) expected.m1++;
        else expected.m2++;
      }
      let counters: Record<string, number> = {};
      for (let t = 0; t < 200; t++) {
        counters = nftCounters(lb);
        if (counters.m1 + counters.m2 + counters.other >= count) break;
        await sleep(25);
      }
      lbc.send(`STOP ${count}`);
      const r = JSON.parse(await lbc.waitFor("RESULT", 15_000));
      assert.deepEqual(counters, expected);
      assert.equal(r.stats.packets, count);
      assert.equal(r.stats.verdicts, count);
      assert.equal(r.stats.sendErrors, 0);
      assert.equal(r.stats.recvErrors, 0);
      assert.equal(r.stats.malformed, 0);
      assert.equal(r.stats.truncated, 0);
      assert.equal(r.stats.verdictErrors, 0);
      assert.equal(r.stats.missingVerdicts, 0);
      assert.equal(r.received, count, `UDP socket in lb: ${r.udp}`);
      assert.equal(r.drained, 0);
      assert.equal(r.seen.prerouting, count);
      assert.equal(r.seen.ipv4, count);
      assert.equal(r.seen.ifindexes.length, 1);
      assert.ok(r.seen.ifindexes[0] > 1);
      assert.equal(r.seen.maxPayload, 20 + 8 + 18);
      // readQueueProcStats() inside the namespace, just before close
      const q = (r.proc as ReturnType<typeof readQueueProcStats>).find((s) => s.queue === QUEUE);
      assert.ok(q);
      assert.equal(q.portId, portId);
      assert.equal(q.queueTotal, 0);
      assert.equal(q.queueDropped, 0);
      assert.equal(q.userDropped, 0);
      assert.equal(q.idSequence, count);
      // closed: unbound
      assert.equal(parseQueueProcStats(lb.exec("cat", [PROC_NFQUEUE])).length, 0);
    });

    test("a queue bound by another process, and no privilege: clear errors", async () => {
      const holder = startChild(lb, "lb");
      await holder.waitFor("READY", 15_000);
      try {
        const second = startChild(lb, "open");
        assert.match(
          await second.waitFor("ERROR", 15_000),
          /^nfqueue 3: bind failed: Operation not permitted — queue 3 is already bound by another process \(netlink port \d+\)$/,
        );
      } finally {
        holder.send("STOP 0");
        await holder.waitFor("RESULT", 15_000);
      }
      const unpriv = startChild(lb, "open", {}, [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
      ]);
      assert.match(
        await unpriv.waitFor("ERROR", 15_000),
        /^nfqueue 3: bind failed: Operation not permitted — need CAP_NET_ADMIN \(run as root\)$/,
      );
      const free = startChild(lb, "open");
      assert.equal(await free.waitFor("OPENED", 15_000), "");
    });

    test("a throwing batch handler drops its packets instead of stranding them", async () => {
      const count = 50;
      const fc = startChild(lb, "failclosed");
      await fc.waitFor("READY", 15_000);
      const before = nftCounters(lb);
      const cl = startChild(client, "client", {
        NFLB_COUNT: String(count),
        NFLB_NPORTS: "5",
        NFLB_SIZE: "18",
      });
      assert.deepEqual(JSON.parse(await cl.waitFor("SENT", 30_000)), { sent: count, failed: 0 });
      fc.send("GO");
      const r = JSON.parse(await fc.waitFor("RESULT", 15_000));
      assert.equal(r.queued, count);
      assert.equal(r.left, 0);
      assert.ok(r.errors >= 1);
      assert.equal(r.message, "boom");
      assert.equal(r.stats.packets, count);
      assert.equal(r.stats.verdicts, count);
      assert.equal(r.stats.verdictErrors, 0);
      assert.deepEqual(nftCounters(lb), before, "dropped packets never reach the input hook");
    });

    test("throughput: drain a full queue (reported, not asserted)", async (t) => {
      const count = Number(process.env.NFLB_BENCH_COUNT ?? 100_000);
      const bench = startChild(lb, "bench");
      await bench.waitFor("READY", 15_000);
      const cl = startChild(client, "client", {
        NFLB_COUNT: String(count),
        NFLB_NPORTS: "64",
        NFLB_SIZE: "18", // 14 + 20 + 8 + 18 + 4 (FCS) = 64-byte frames
      });
      await cl.waitFor("SENT", 120_000);
      // Wait until the kernel queue stops growing.
      let prev = -1;
      for (let i = 0; i < 100; i++) {
        const s = parseQueueProcStats(lb.exec("cat", [PROC_NFQUEUE])).find(
          (x) => x.queue === QUEUE,
        );
        const total = s?.queueTotal ?? 0;
        if (total === prev) break;
        prev = total;
        await sleep(100);
      }
      bench.send("GO");
      const r = JSON.parse(await bench.waitFor("RESULT", 120_000));
      const msg = `drained ${r.drained} queued packets in ${r.ms.toFixed(1)} ms: ${r.pps} pps (queued ${r.queued?.queueTotal}, queue-dropped ${r.queued?.queueDropped}, user-dropped ${r.queued?.userDropped})`;
      t.diagnostic(msg);
      console.log(`# nfqueue throughput: ${msg}`);
      assert.ok(r.drained > 0);
      assert.equal(r.drained, r.queued.queueTotal);
      assert.equal(r.left.queueTotal, 0);
      assert.equal(r.stats.verdictErrors, 0);
    });
  });
}
