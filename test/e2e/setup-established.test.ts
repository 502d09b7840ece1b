// What happens to established connections when targets change, measured (issue 9.6):
//  - nat, with or without --syn-only: conntrack keeps each connection's DNAT, so a
//    connection (a UDP flow too, while its entry lives) stays with its target even when
//    that target is deactivated. Without
//    --syn-only the daemon still sees (and marks) every packet; a stopped daemon or a
//    table without targets then stalls established connections too. With --syn-only
//    neither matters: only a connection's first packet goes to the daemon.
//    With --queue-bypass and no daemon, established packets pass unmarked and conntrack
//    still translates them. statistic: the same through conntrack after a re-setup.
//  - dsr: no connection state on the load balancer; a deactivated target's connections
//    are routed to other targets, which reset them. The others stay.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Daemon } from "../helpers/daemon.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { LongClients, startEchoServer } from "../helpers/longconn.js";
import { isRoot } from "../helpers/netns.js";
import { type LbTopology, makeDsrTargets, udpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 9100;
const UDP_PORT = 9200;
const NAT = { name: "estnat", vip: "10.200.0.11", queue: "6" };
const SYN = { name: "estsyn", vip: "10.200.0.12", queue: "7" };
const DSR = { name: "estdsr", vip: "10.200.0.13", queue: "8" };
const BYPASS = { name: "estbyp", vip: "10.200.0.14", queue: "9" };
const STAT = { name: "eststat", vip: "10.200.0.15" };
const COUNT = 12;

const target = (answer: string) => answer.split(":")[0];

describe("established connections when targets change", { skip }, () => {
  let f: LbFixture;
  let t: LbTopology;
  const daemons = new Map<string, Daemon>();
  const clients: LongClients[] = [];

  before(async () => {
    f = LbFixture.create();
    t = f.topology;
    for (const [i, ns] of t.targets.entries())
      f.onClose(await startEchoServer(ns, `t${i + 1}`, PORT));
    await f.serveNames(UDP_PORT, (i) => [t.targetAddrs[i].v4]);
    makeDsrTargets(t, [`${DSR.vip}/32`]);
    const nat = ["--mode", "nat", "--proto", "tcp,udp", ...f.targetArgs("v4")];
    f.setup(NAT.name, ...nat, "--vip", NAT.vip, "--queue", NAT.queue);
    f.setup(SYN.name, ...nat, "--syn-only", "--vip", SYN.vip, "--queue", SYN.queue);
    // Marks of their own: dsr routes by mark, and the nat setups' packets carry 1..3.
    const dsrTargets = t.targetAddrs.flatMap((a, i) => ["--target", `${11 + i}=${a.v4}`]);
    f.setup(
      DSR.name,
      "--mode",
      "dsr",
      "--proto",
      "tcp",
      ...dsrTargets,
      "--vip",
      DSR.vip,
      "--queue",
      DSR.queue,
    );
    f.setup(BYPASS.name, ...nat, "--queue-bypass", "--vip", BYPASS.vip, "--queue", BYPASS.queue);
    f.setup(STAT.name, ...statistic(f.targetArgs("v4")));
    for (const s of [NAT, SYN, DSR, BYPASS]) daemons.set(s.name, await f.daemon(s.name, s.queue));
  });
  after(async () => {
    for (const c of clients) c.close();
    await f?.close();
  });

  const statistic = (targets: string[]) => [
    "--mode",
    "statistic",
    "--proto",
    "tcp",
    "--vip",
    STAT.vip,
    ...targets,
  ];
  const open = async (vip: string, firstPort: number, localAddress?: string) => {
    const c = await LongClients.open(t.client, {
      host: vip,
      port: PORT,
      count: COUNT,
      firstPort,
      ...(localAddress ? { localAddress } : {}),
    });
    clients.push(c);
    return c;
  };
  const queued = (name: string): number =>
    JSON.parse(f.nflb("stats", "--name", name, "--json")).rules.queued.packets;

  test("nat without --syn-only: a deactivated target keeps its connections (conntrack's DNAT), though the daemon sees every packet", async () => {
    const c = await open(NAT.vip, 40000);
    const before = await c.round("before");
    assert.ok(
      before.every((a) => /^t[123]:before$/.test(a)),
      JSON.stringify(before),
    );
    assert.ok(new Set(before.map(target)).size >= 2, "spread over the targets");
    const udp = (firstPort: number) =>
      udpRequests(t.client, { host: NAT.vip, port: UDP_PORT, count: COUNT, firstPort });
    const udpBefore = await udp(45000);
    assert.ok(
      udpBefore.some((a) => a === "t1" || a === "t2"),
      JSON.stringify(udpBefore),
    );
    const queuedBefore = queued(NAT.name);

    f.nflb("deactivate", "--name", NAT.name, "1", "2");
    const afterChange = await c.round("after");
    assert.deepEqual(
      afterChange,
      before.map((a) => `${target(a)}:after`),
      "every connection answered by its own target, t1 and t2 included",
    );
    // UDP flows too, while their conntrack entry lives (the same source ports again).
    assert.deepEqual(await udp(45000), udpBefore);
    // The daemon saw them: they were not spared the queue, conntrack kept their target.
    assert.ok(queued(NAT.name) >= queuedBefore + COUNT, "established packets were queued");
    const fresh = await open(NAT.vip, 41000);
    assert.deepEqual(new Set((await fresh.round("new")).map(target)), new Set(["t3"]));

    // With no target at all the daemon drops what it cannot mark: established ones too.
    f.nflb("deactivate", "--name", NAT.name, "3");
    assert.deepEqual(await c.round("none"), new Array(COUNT).fill("ERR:timeout"));
    f.nflb("activate", "--name", NAT.name, "1", "2", "3");
  });

  test("nat without --syn-only: a stopped daemon stalls established connections", async () => {
    const c = await open(NAT.vip, 42000);
    const before = await c.round("before");
    assert.ok(
      before.every((a) => /^t[123]:before$/.test(a)),
      JSON.stringify(before),
    );
    await daemons.get(NAT.name)?.stop();
    assert.deepEqual(await c.round("stopped"), new Array(COUNT).fill("ERR:timeout"));
  });

  test("nat --syn-only: established connections need neither an active target nor the daemon", async () => {
    const c = await open(SYN.vip, 43000);
    const before = await c.round("before");
    assert.ok(
      before.every((a) => /^t[123]:before$/.test(a)),
      JSON.stringify(before),
    );
    f.nflb("deactivate", "--name", SYN.name, "1", "2", "3");
    assert.deepEqual(
      await c.round("none"),
      before.map((a) => `${target(a)}:none`),
    );
    await daemons.get(SYN.name)?.stop();
    assert.deepEqual(
      await c.round("stopped"),
      before.map((a) => `${target(a)}:stopped`),
    );
  });

  test("nat --queue-bypass: with the daemon stopped, established connections pass unmarked and conntrack still sends them to their target", async () => {
    const c = await open(BYPASS.vip, 46000);
    const before = await c.round("before");
    assert.ok(
      before.every((a) => /^t[123]:before$/.test(a)),
      JSON.stringify(before),
    );
    await daemons.get(BYPASS.name)?.stop();
    assert.deepEqual(
      await c.round("stopped"),
      before.map((a) => `${target(a)}:stopped`),
    );
  });

  test("statistic: a re-setup without a target keeps that target's established connections", async () => {
    const c = await open(STAT.vip, 47000);
    const before = await c.round("before");
    assert.ok(
      before.every((a) => /^t[123]:before$/.test(a)),
      JSON.stringify(before),
    );
    assert.ok(
      before.some((a) => target(a) !== "t3"),
      "some connections not on t3",
    );
    f.nflb("setup", "--name", STAT.name, ...statistic(["--target", `3=${t.targetAddrs[2].v4}`]));
    assert.deepEqual(
      await c.round("after"),
      before.map((a) => `${target(a)}:after`),
    );
    const fresh = await open(STAT.vip, 48000);
    assert.deepEqual(new Set((await fresh.round("new")).map(target)), new Set(["t3"]));
  });

  test("dsr: a deactivated target's connections move to other targets, which reset them; the others stay", async (tc) => {
    // The client's back address: the targets answer it directly.
    const c = await open(DSR.vip, 44000, "10.100.0.10");
    const before = await c.round("before");
    assert.ok(
      before.every((a) => /^t[123]:before$/.test(a)),
      JSON.stringify(before),
    );
    assert.ok(
      before.some((a) => target(a) === "t1"),
      "some connections on t1",
    );
    f.nflb("deactivate", "--name", DSR.name, "11");
    const afterChange = await c.round("after");
    tc.diagnostic(`after deactivating t1: ${JSON.stringify(afterChange)}`);
    for (const [i, a] of before.entries()) {
      if (target(a) === "t1")
        assert.equal(afterChange[i], "ERR:ECONNRESET", `connection ${i} was on t1`);
      else assert.equal(afterChange[i], `${target(a)}:after`, `connection ${i}`);
    }
  });
});
