// `nflb setup --mode statistic` end to end: kernel-only balancing through a real lb
// namespace, no daemon. client -> lb (iptables statistic + DNAT) -> 3 targets.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { SetupCounters, SetupSpec } from "../../src/netfilter/index.js";
import { isRoot } from "../helpers/netns.js";
import {
  type LbTopology,
  lbTopology,
  netfilter,
  startTargetServer,
  type TargetServer,
  tally,
  tcpRequests,
  udpRequests,
} from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;

function spec(over: Partial<SetupSpec>): SetupSpec {
  return {
    name: "stat",
    mode: "statistic",
    vips: ["10.200.0.1"],
    targets: [],
    queue: { first: 0, last: 0 },
    queueBypass: false,
    synOnly: false,
    protocols: [],
    ports: "",
    statistic: "nth",
    snat: false,
    ...over,
  };
}

describe("setup --mode statistic", { skip }, () => {
  let t: LbTopology;
  const servers: TargetServer[] = [];

  before(async () => {
    t = lbTopology();
    for (const [i, ns] of t.targets.entries()) {
      const a = t.targetAddrs[i];
      servers.push(await startTargetServer(ns, `t${i + 1}`, PORT, [a.v4, a.v6]));
    }
  });
  after(() => {
    for (const s of servers) s.stop();
    if (t) {
      try {
        netfilter(t.lb, "teardown", "stat");
      } catch {
        // the namespace goes anyway
      }
      t.topo.destroy();
    }
  });

  const targets4 = () => t.targetAddrs.map((a, i) => ({ fwmark: i + 1, address: a.v4, weight: 1 }));

  test("nth: 300 TCP connections, exact round robin, counters add up", async () => {
    netfilter(t.lb, "setup", spec({ targets: targets4(), protocols: ["tcp"], ports: "8080" }));
    try {
      const answers = await tcpRequests(t.client, {
        host: "10.200.0.1",
        port: PORT,
        count: 300,
        firstPort: 20000,
      });
      assert.deepEqual(tally(answers), { t1: 100, t2: 100, t3: 100 });
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "stat");
      assert.deepEqual(
        c.targets.map((x) => x.connections),
        [100, 100, 100],
      );
      for (const x of c.targets) {
        // SYN, ACK, FIN/ACK... at least three packets per connection reached each target.
        assert.ok(x.packets >= 300, `packets ${x.packets}`);
        assert.ok(x.bytes > 0);
      }
      assert.deepEqual(c.queued, { packets: 0, bytes: 0 });

      // Only tcp/8080 is balanced; UDP to the VIP passes untouched (nobody answers).
      const udp = await udpRequests(t.client, {
        host: "10.200.0.1",
        port: PORT,
        count: 2,
        firstPort: 20400,
        timeoutMs: 600,
      });
      assert.ok(
        udp.every((a) => a.startsWith("ERR:")),
        JSON.stringify(udp),
      );

      // Ping to the VIP is balanced too: one ping (one ICMP id), one new flow, one target.
      const ping = t.client.tryExec("ping", [
        ...["-4", "-n", "-c", "2", "-i", "0.2", "-W", "2", "-w", "5", "10.200.0.1"],
      ]);
      assert.equal(ping.status, 0, `ping: ${ping.stdout}${ping.stderr}`);
      const afterPing = netfilter<SetupCounters>(t.lb, "readCounters", "stat");
      assert.equal(
        afterPing.targets.reduce((n, x) => n + (x.connections ?? 0), 0),
        301,
      );

      // Locally originated connections (OUTPUT) are balanced too.
      const local = await tcpRequests(t.lb, {
        host: "10.200.0.1",
        port: PORT,
        count: 6,
        firstPort: 20500,
      });
      assert.deepEqual(tally(local), { t1: 2, t2: 2, t3: 2 });
    } finally {
      assert.equal(netfilter(t.lb, "teardown", "stat"), true);
    }
  });

  test("nth with weights 1:2:3 is exact per cycle of 6", async () => {
    const targets = targets4().map((x, i) => ({ ...x, weight: i + 1 }));
    netfilter(t.lb, "setup", spec({ targets }));
    try {
      const answers = await tcpRequests(t.client, {
        host: "10.200.0.1",
        port: PORT,
        count: 60,
        firstPort: 21000,
      });
      assert.deepEqual(tally(answers), { t1: 10, t2: 20, t3: 30 });
    } finally {
      netfilter(t.lb, "teardown", "stat");
    }
  });

  test("random with weights 1:2:3 roughly follows the weights", async () => {
    const targets = targets4().map((x, i) => ({ ...x, weight: i + 1 }));
    netfilter(t.lb, "setup", spec({ targets, statistic: "random" }));
    try {
      const answers = await tcpRequests(t.client, {
        host: "10.200.0.1",
        port: PORT,
        count: 300,
        firstPort: 22000,
      });
      const got = tally(answers);
      assert.equal(answers.filter((a) => a.startsWith("ERR")).length, 0);
      // Expected 50/100/150, standard deviations ~7.5/8.2/8.7: +-40 fails ~never.
      for (const [name, want] of [
        ["t1", 50],
        ["t2", 100],
        ["t3", 150],
      ] as const) {
        assert.ok(Math.abs((got[name] ?? 0) - want) <= 40, `${name}: ${JSON.stringify(got)}`);
      }
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "stat");
      assert.equal(
        c.targets.reduce((s, x) => s + (x.connections ?? 0), 0),
        300,
      );
      assert.deepEqual(
        c.targets.map((x) => x.connections),
        [got.t1, got.t2, got.t3],
      );
    } finally {
      netfilter(t.lb, "teardown", "stat");
    }
  });

  test("IPv6 VIP: TCP and UDP", async () => {
    const targets = t.targetAddrs.map((a, i) => ({ fwmark: i + 1, address: a.v6, weight: 1 }));
    netfilter(
      t.lb,
      "setup",
      spec({ vips: ["fd00:200::1"], targets, protocols: ["tcp", "udp"], ports: "8000-8100" }),
    );
    try {
      const tcp = await tcpRequests(t.client, {
        host: "fd00:200::1",
        port: PORT,
        count: 9,
        firstPort: 23000,
      });
      assert.deepEqual(tally(tcp), { t1: 3, t2: 3, t3: 3 });
      const udp = await udpRequests(t.client, {
        host: "fd00:200::1",
        port: PORT,
        count: 6,
        firstPort: 23100,
      });
      // TCP and UDP share the round robin; 15 new flows in all.
      assert.deepEqual(tally([...tcp, ...udp]), { t1: 5, t2: 5, t3: 5 });
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "stat");
      assert.deepEqual(
        c.targets.map((x) => x.connections),
        [5, 5, 5],
      );
    } finally {
      netfilter(t.lb, "teardown", "stat");
    }
  });

  test("--snat: targets need no route back via the lb", async () => {
    for (const ns of t.targets) {
      ns.exec("ip", ["route", "del", "default"]);
    }
    try {
      netfilter(t.lb, "setup", spec({ targets: targets4(), snat: true }));
      const answers = await tcpRequests(t.client, {
        host: "10.200.0.1",
        port: PORT,
        count: 6,
        firstPort: 24000,
      });
      assert.deepEqual(tally(answers), { t1: 2, t2: 2, t3: 2 });
    } finally {
      netfilter(t.lb, "teardown", "stat");
      for (const ns of t.targets) {
        ns.exec("ip", ["route", "add", "default", "via", "10.100.0.1"]);
      }
    }
  });
});
