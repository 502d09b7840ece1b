// The daemon's options and promises, each with real traffic through a real queue:
// --qlength and --fail-open (the kernel's queue while the daemon is stopped),
// --notargets-fwmark, --nolb-fwmark, --invalid accept, --no-gso; SIGTERM gives every
// packet already queued its verdict; ICMP redirect and parameter problem reach the target
// of the flow they quote; flows are applied within a bound of their change.
// What the daemon did is seen from outside: nft counters in the lb namespace (after the
// queue: the mark each packet got), at the targets (what arrived), and the kernel's queue
// counters.
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { readCounters } from "../../src/dataplane/counters.js";
import { parseFlow } from "../../src/flows/index.js";
import { parseQueueProcStats } from "../../src/nfqueue/procstats.js";
import { updateFlows } from "../../src/state/flowstore.js";
import { icmpMessage, ipPacket, PROTO_ICMP, PROTO_TCP, udpDatagram } from "../helpers/craft.js";
import type { Daemon } from "../helpers/daemon.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import { injectViaTun } from "../helpers/tun.js";
import { sendUdp } from "../helpers/udpsend.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const NAME = "optlb";
const VIP = "10.200.0.1";
const PORT = 7070;
const QUEUE = "41";
const CLIENT = "10.100.1.10";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Named nft counters; `rules` each end in `counter name "<name>"`. */
function counterTable(ns: Netns, table: string, hook: string, names: string[], rules: string[]) {
  const text = [
    `table inet ${table} {`,
    ...names.map((n) => `  counter ${n} { }`),
    "  chain c {",
    `    type filter hook ${hook} priority 10; policy accept;`,
    ...rules.map((r) => `    ${r}`),
    "  }",
    "}",
    "",
  ].join("\n");
  ns.exec("nft", ["-f", "-"], text);
  return (name: string): number => {
    const doc = JSON.parse(ns.exec("nft", ["-j", "list", "counter", "inet", table, name])) as {
      nftables: { counter?: { packets: number } }[];
    };
    return doc.nftables.find((e) => e.counter)?.counter?.packets ?? Number.NaN;
  };
}

describe("nflb lb: options and promises", { skip }, () => {
  let f: LbFixture;
  let lbCount: (name: string) => number;
  const delivered: ((name: string) => number)[] = [];
  let nextPort = 20000;
  const ports = (n: number) => {
    nextPort += n;
    return nextPort - n;
  };

  /** Packets the targets received on PORT (UDP). */
  const arrived = () => delivered.reduce((n, read) => n + read("arrived"), 0);
  const queueStats = (d: Daemon) => {
    const text = f.topology.lb.exec("cat", [`/proc/${d.child.pid}/net/netfilter/nfnetlink_queue`]);
    const q = parseQueueProcStats(text).find((s) => s.queue === Number(QUEUE));
    assert.ok(q, `queue ${QUEUE} is bound`);
    return q;
  };
  const stats = () => readCounters(NAME).find((q) => q.queue === Number(QUEUE));
  /** Waits until `fn` holds (at most `ms`). */
  async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!fn()) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }
  async function blast(count: number): Promise<void> {
    const sent = await sendUdp(f.topology.client, {
      host: VIP,
      port: PORT,
      count,
      firstPort: ports(count),
    });
    assert.equal(sent, count);
  }

  before(async () => {
    f = LbFixture.create();
    const lb = f.topology.lb;
    f.nflb("init", "--name", NAME, "--M", "1009");
    f.setup(NAME, "--mode", "nat", "--vip", VIP, "--queue", QUEUE, ...f.targetArgs("v4"));
    const marks = [1, 2, 3, 66, 77];
    lbCount = counterTable(
      lb,
      "opttest",
      "prerouting",
      [
        "unmarked",
        "invalid",
        ...marks.map((m) => `m${m}`),
        ...[1, 2, 3].flatMap((m) => [`pp${m}`, `rd${m}`]),
      ],
      [
        `ip daddr ${VIP} udp dport ${PORT} meta mark 0 counter name "unmarked"`,
        ...marks.map(
          (m) => `ip daddr ${VIP} udp dport ${PORT} meta mark ${m} counter name "m${m}"`,
        ),
        `ip daddr ${VIP} ip protocol tcp meta mark 0 counter name "invalid"`,
        ...[1, 2, 3].flatMap((m) => [
          `icmp type parameter-problem meta mark ${m} counter name "pp${m}"`,
          `icmp type redirect meta mark ${m} counter name "rd${m}"`,
        ]),
      ],
    );
    for (const t of f.topology.targets) {
      delivered.push(
        counterTable(
          t,
          "optsink",
          "input",
          ["arrived"],
          [`udp dport ${PORT} counter name "arrived" drop`],
        ),
      );
    }
  });

  after(() => f?.close());

  test("--qlength caps the kernel's queue; --fail-open passes the overflow unmarked, without it the overflow is dropped", async () => {
    for (const failOpen of [true, false]) {
      const extra = failOpen ? ["--fail-open"] : [];
      const d = await f.daemonWith(NAME, "--queue", QUEUE, "--qlength", "16", ...extra);
      const unmarked = lbCount("unmarked");
      const before = arrived();
      const dropped = queueStats(d).queueDropped;
      d.child.kill("SIGSTOP");
      try {
        await blast(200);
        await until("16 queued", () => queueStats(d).queueTotal === 16);
        await sleep(100);
        const q = queueStats(d);
        assert.equal(q.queueTotal, 16, "the queue holds --qlength packets");
        if (failOpen) {
          assert.equal(lbCount("unmarked") - unmarked, 184, "the overflow passed unmarked");
          assert.equal(q.queueDropped - dropped, 0);
        } else {
          assert.equal(lbCount("unmarked") - unmarked, 0, "nothing passed unmarked");
          assert.equal(q.queueDropped - dropped, 184, "the overflow was dropped");
        }
      } finally {
        d.child.kill("SIGCONT");
      }
      await until("the queued packets at the targets", () => arrived() - before === 16);
      assert.equal(await d.stop(), 0);
    }
  });

  test("SIGTERM: every packet already queued gets its verdict and arrives; none is dropped", async () => {
    const d = await f.daemonWith(NAME, "--queue", QUEUE);
    const before = arrived();
    const dropped = queueStats(d).queueDropped;
    d.child.kill("SIGSTOP");
    // More than one wake-up of the worker takes (16 batches of 64): the stop request
    // arrives while packets are still queued, so it must drain them, not unbind.
    await blast(3000);
    await until("3000 queued", () => queueStats(d).queueTotal === 3000);
    assert.equal(queueStats(d).queueDropped, dropped);
    d.child.kill("SIGTERM");
    d.child.kill("SIGCONT");
    assert.equal(await d.stop(), 0);
    await until("all 3000 at the targets", () => arrived() - before >= 3000, 10_000);
    await sleep(200);
    assert.equal(arrived() - before, 3000, "every queued packet arrived, once");
    const s = stats();
    assert.ok(s && !s.running);
  });

  test("--notargets-fwmark marks packets when no target is active; without it they are dropped", async () => {
    f.nflb("deactivate", "--name", NAME, "1", "2", "3");
    try {
      let d = await f.daemonWith(NAME, "--queue", QUEUE, "--notargets-fwmark", "77");
      const m77 = lbCount("m77");
      const base = stats();
      await blast(20);
      await until("20 marked 77", () => lbCount("m77") - m77 === 20);
      assert.equal((stats()?.noTargetMarked ?? 0) - (base?.noTargetMarked ?? 0), 20);
      await d.stop();
      d = await f.daemonWith(NAME, "--queue", QUEUE);
      const dropped = stats()?.noTargetDropped ?? 0;
      await blast(20);
      await until("20 dropped", () => (stats()?.noTargetDropped ?? 0) - dropped === 20);
      assert.equal(lbCount("m77") - m77, 20, "no more marks");
      await d.stop();
    } finally {
      f.nflb("activate", "--name", NAME, "1", "2", "3");
    }
  });

  test("--nolb-fwmark marks packets no flow matches; without it they are dropped", async () => {
    updateFlows(() => [parseFlow({ name: "elsewhere", target: NAME, dsts: "10.201.0.0/24" })]);
    try {
      let d = await f.daemonWith(NAME, "--queue", QUEUE, "--nolb-fwmark", "66");
      const m66 = lbCount("m66");
      const base = stats()?.noFlowMarked ?? 0;
      await blast(20);
      await until("20 marked 66", () => lbCount("m66") - m66 === 20);
      assert.equal((stats()?.noFlowMarked ?? 0) - base, 20);
      await d.stop();
      d = await f.daemonWith(NAME, "--queue", QUEUE);
      const dropped = stats()?.noFlowDropped ?? 0;
      await blast(20);
      await until("20 dropped", () => (stats()?.noFlowDropped ?? 0) - dropped === 20);
      assert.equal(lbCount("m66") - m66, 20);
      await d.stop();
    } finally {
      updateFlows(() => []);
    }
  });

  /** TCP packets to VIP:PORT cut after 2 bytes of TCP header: the classifier's "truncated". */
  const truncatedTcp = (n: number) =>
    Array.from({ length: n }, (_, i) => {
      const p = ipPacket(`198.51.100.${i + 1}`, VIP, PROTO_TCP, Uint8Array.of(0x30, 0x39));
      return p;
    });

  test("--invalid accept passes unparsable packets unmarked; the default drops them; both count them", async () => {
    for (const accept of [true, false]) {
      const d = await f.daemonWith(
        NAME,
        "--queue",
        QUEUE,
        ...(accept ? ["--invalid", "accept"] : []),
      );
      const passed = lbCount("invalid");
      const base = stats();
      const r = await injectViaTun(f.topology.lb, {
        routes: ["198.51.100.0/24"],
        packets: truncatedTcp(10),
      });
      assert.equal(r.written, 10, JSON.stringify(r));
      const field = accept ? "invalidAccepted" : "invalidDropped";
      await until(`10 ${field}`, () => (stats()?.[field] ?? 0) - (base?.[field] ?? 0) === 10);
      assert.equal(lbCount("invalid") - passed, accept ? 10 : 0);
      assert.equal(
        (stats()?.invalidByReason[1] ?? 0) - (base?.invalidByReason[1] ?? 0),
        10,
        "reason: truncated",
      );
      await d.stop();
    }
  });

  test("GSO packets are queued whole by default, segmented by the kernel with --no-gso", async () => {
    const [t1] = f.topology.targets;
    const server = t1.spawn(
      process.execPath,
      [
        "-e",
        `require("node:net").createServer((s) => { s.on("data", () => {}); s.on("error", () => {}); }).listen(${PORT + 1}, () => console.log("ready"))`,
      ],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    f.onClose(() => server.kill());
    await new Promise((r) => server.stdout?.once("data", r));
    // A bulk TCP transfer from the lb itself to target 1 (through the VIP, so queued):
    // TCP hands the output hook segments of up to 64 KiB (GSO).
    const bulk = `const s = require("node:net").connect(${PORT + 1}, "${VIP}", () => { s.end(Buffer.alloc(4 << 20)); }); s.on("close", () => process.exit(0)); s.on("error", (e) => { console.error(e.message); process.exit(1); }); setTimeout(() => process.exit(2), 15000);`;
    const sizes: number[] = [];
    for (const gso of [true, false]) {
      f.nflb("deactivate", "--name", NAME, "2", "3"); // the transfer goes to target 1
      const d = await f.daemonWith(NAME, "--queue", QUEUE, ...(gso ? [] : ["--no-gso"]));
      try {
        f.topology.lb.exec(process.execPath, ["-e", bulk]);
        await sleep(1100); // the largest packet is published with the counters, every second
        sizes.push(stats()?.largestPacket ?? 0);
      } finally {
        await d.stop();
        f.nflb("activate", "--name", NAME, "2", "3");
      }
    }
    assert.ok(sizes[0] > 1500, `with GSO the daemon saw packets of ${sizes[0]} bytes`);
    assert.ok(sizes[1] > 0 && sizes[1] <= 1500, `with --no-gso at most the MTU: ${sizes[1]}`);
  });

  test("ICMP redirect and parameter problem reach the target of the flow they quote", async () => {
    const d = await f.daemonWith(NAME, "--queue", QUEUE);
    const expected = new Map<string, number>();
    const packets: Uint8Array[] = [];
    for (let i = 0; i < 12; i++) {
      const sport = 30000 + i;
      // What a target sent to the client (as the router saw it), then the router's error.
      const quoted = ipPacket(
        VIP,
        CLIENT,
        17,
        udpDatagram(VIP, CLIENT, PORT, sport, new Uint8Array(8)),
      );
      const [type, name] = i % 2 === 0 ? [12, "pp"] : [5, "rd"];
      packets.push(
        ipPacket("198.51.100.1", VIP, PROTO_ICMP, icmpMessage(type, 0, quoted.subarray(0, 28))),
      );
      const mark = Number(
        f
          .nflb(
            "fwmark",
            "--name",
            NAME,
            "--proto",
            "udp",
            "--src",
            `${CLIENT}:${sport}`,
            "--dst",
            `${VIP}:${PORT}`,
          )
          .trim(),
      );
      const key = `${name}${mark}`;
      expected.set(key, (expected.get(key) ?? 0) + 1);
    }
    const before = new Map([...expected.keys()].map((k) => [k, lbCount(k)]));
    const r = await injectViaTun(f.topology.lb, { routes: ["198.51.100.0/24"], packets });
    assert.equal(r.written, 12);
    await until("the errors marked", () =>
      [...expected].every(([k, n]) => lbCount(k) - (before.get(k) ?? 0) === n),
    );
    assert.ok(new Set([...expected.keys()].map((k) => k.slice(2))).size > 1, "several targets");
    await d.stop();
  });

  test("flows are applied within 50 ms of a change (median of 5; each within 1 s)", async (t) => {
    const d = await f.daemonWith(NAME, "--queue", QUEUE);
    const flowFile = join(f.stateDir, "flows.json");
    const latencies: number[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const applied = stats()?.flowsApplied ?? 0;
        updateFlows(() => [parseFlow({ name: `change${i}`, target: NAME, dsts: VIP })]);
        const changedAt = statSync(flowFile).mtimeMs;
        await until("the change applied", () => (stats()?.flowsApplied ?? 0) > applied, 2000);
        const appliedAt = new Date(stats()?.flowsAppliedAt ?? 0).getTime();
        latencies.push(appliedAt - changedAt);
        assert.equal(stats()?.flows, 1);
        await sleep(50);
      }
    } finally {
      updateFlows(() => []);
      await d.stop();
    }
    t.diagnostic(`flows applied after ${latencies.map((l) => l.toFixed(1)).join(", ")} ms`);
    const sorted = latencies.slice().sort((a, b) => a - b);
    assert.ok(sorted[2] <= 50, `median ${sorted[2]} ms (${latencies.join(", ")})`);
    assert.ok(sorted[4] <= 1000, `slowest ${sorted[4]} ms`);
  });
});
