// Many services behind one daemon: flows send each service's traffic to its own load
// balancer (targets), by protocol, addresses, ports and L4 byte matches, by priority.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Daemon, tryNflbIn } from "../helpers/daemon.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { tally, tcpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const VIP = "10.200.0.1";
const VIP2 = "10.200.0.2";
const QUEUE = "30";

describe("flows: several services on one daemon", { skip }, () => {
  let f: LbFixture;
  let daemon: Daemon | undefined;

  before(async () => {
    f = LbFixture.create();
    const a = f.topology.targetAddrs;
    for (const port of [8080, 8081]) await f.serveNames(port, (i) => [a[i].v4]);
    // web: t1 t2 on VIP:8080; api: t3 on VIP:8081; other: t2 (fwmark 12) on VIP2 (and VIP).
    const nat = ["--mode", "nat", "--queue", QUEUE, "--proto", "tcp"];
    f.setup(
      "web",
      ...nat,
      "--vip",
      VIP,
      "--ports",
      "8080",
      "--target",
      `1=${a[0].v4}`,
      "--target",
      `2=${a[1].v4}`,
    );
    f.setup("api", ...nat, "--vip", VIP, "--ports", "8081", "--target", `3=${a[2].v4}`);
    // In NAT mode a load balancer DNATs its marks only for its own VIPs: "other" also
    // covers VIP, so flows can move VIP traffic to it.
    f.setup("other", ...nat, "--vip", `${VIP},${VIP2}`, "--target", `12=${a[1].v4}`);
    f.nflb(
      "flow-set",
      "--name",
      "web",
      "--target",
      "web",
      "--protocols",
      "tcp",
      "--dsts",
      VIP,
      "--dports",
      "8080",
      "--prio",
      "10",
    );
    f.nflb(
      "flow-set",
      "--name",
      "api",
      "--target",
      "api",
      "--protocols",
      "tcp",
      "--dsts",
      VIP,
      "--dports",
      "8081",
      "--prio",
      "10",
    );
    f.nflb("flow-set", "--name", "other", "--target", "other", "--dsts", VIP2);
    daemon = await f.daemon("web", QUEUE);
  });

  after(() => f?.close());

  const client = () => f.topology.client;
  /** A flow above "api" that sends VIP:8081 to the "other" load balancer (t2). */
  const moveApi = () =>
    f.nflb(
      "flow-set",
      "--name",
      "api-moved",
      "--target",
      "other",
      "--protocols",
      "tcp",
      "--dsts",
      VIP,
      "--dports",
      "8081",
      "--prio",
      "20",
    );
  let nextPort = 20000;
  async function spread(
    host: string,
    port: number,
    count: number,
  ): Promise<Record<string, number>> {
    const answers = await tcpRequests(client(), { host, port, count, firstPort: nextPort });
    nextPort += count;
    return tally(answers);
  }

  test("two services on one VIP and a third on another VIP each reach their own targets", async () => {
    const web = await spread(VIP, 8080, 60);
    assert.deepEqual(Object.keys(web).sort(), ["t1", "t2"], JSON.stringify(web));
    assert.deepEqual(await spread(VIP, 8081, 20), { t3: 20 });
    assert.deepEqual(await spread(VIP2, 8080, 20), { t2: 20 });
  });

  test("overlapping flows: the higher priority wins; deleting it restores the other", async () => {
    moveApi();
    assert.deepEqual(await spread(VIP, 8081, 10), { t2: 10 });
    f.nflb("flow-delete", "--name", "api-moved");
    assert.deepEqual(await spread(VIP, 8081, 10), { t3: 10 });
  });

  test("a byte-match flow (tcp[2:2] = 8080, the destination port) takes the traffic it matches", async () => {
    f.nflb(
      "flow-set",
      "--name",
      "bytes",
      "--target",
      "api",
      "--protocols",
      "tcp",
      "--dsts",
      VIP,
      "--match",
      "tcp[2:2] = 8080",
      "--prio",
      "30",
    );
    // t3 serves 8080 too; api's DNAT for mark 3 covers the whole VIP.
    assert.deepEqual(await spread(VIP, 8080, 10), { t3: 10 });
    f.nflb("flow-delete", "--name", "bytes");
    const back = await spread(VIP, 8080, 20);
    assert.equal(back.t3, undefined, JSON.stringify(back));
  });

  test("flows change while traffic runs: every connection is served, by the old or new flow", async () => {
    const traffic = tcpRequests(client(), {
      host: VIP,
      port: 8081,
      count: 120,
      firstPort: nextPort,
      concurrency: 4,
    });
    nextPort += 120;
    for (let i = 0; i < 6; i++) {
      moveApi();
      await new Promise((r) => setTimeout(r, 30));
      f.nflb("flow-delete", "--name", "api-moved");
      await new Promise((r) => setTimeout(r, 30));
    }
    const counts = tally(await traffic);
    assert.equal((counts.t2 ?? 0) + (counts.t3 ?? 0), 120, JSON.stringify(counts));
  });

  test("bad flow definitions are rejected with the reason, and nothing changes", () => {
    const before = f.nflb("flow-list");
    const bad: [string[], RegExp][] = [
      [["--dsts", "10.0.0.0/33"], /10\.0\.0\.0\/33/],
      [["--protocols", "tcp", "--dports", "2000-1000"], /2000-1000/],
      [["--dports", "80"], /need protocols/],
      [["--protocols", "tcp", "--match", "tcp[2:3] = 1"], /size 3/],
      [["--protocols", "tcp", "--match", "udp[0:2] = 53"], /udp is not among/],
      [["--protocols", "icmp"], /protocol/],
    ];
    for (const [args, reason] of bad) {
      const r = tryNflbIn(f.topology.lb, "flow-set", "--name", "bad", "--target", "web", ...args);
      assert.notEqual(r.status, 0, args.join(" "));
      assert.match(r.stderr, reason, args.join(" "));
    }
    const unknown = tryNflbIn(f.topology.lb, "flow-set", "--name", "bad", "--target", "nosuchlb");
    assert.match(unknown.stderr, /no load balancer named "nosuchlb"/);
    assert.equal(f.nflb("flow-list"), before);
    assert.deepEqual(f.nflb("flow-list-names").trim().split("\n"), ["api", "web", "other"]);
  });

  test("no flow matches: dropped and counted", async () => {
    f.nflb("flow-delete", "--name", "other");
    const answers = await tcpRequests(client(), {
      host: VIP2,
      port: 8080,
      count: 2,
      firstPort: nextPort,
      timeoutMs: 600,
    });
    nextPort += 2;
    assert.ok(
      answers.every((x) => x.startsWith("ERR")),
      JSON.stringify(answers),
    );
    const stats = JSON.parse(f.nflb("stats", "--name", "web", "--json"));
    assert.ok(stats.queues[0].noFlowDropped >= 2, JSON.stringify(stats.queues[0]));
    f.nflb("flow-set", "--name", "other", "--target", "other", "--dsts", VIP2);
  });

  test("ICMP echo to the VIP: no flow without --promiscuous-ping; with it, the best flow by address", async () => {
    const ping = () => client().tryExec("ping", ["-c", "2", "-i", "0.2", "-W", "1", VIP]);
    const before = JSON.parse(f.nflb("stats", "--name", "web", "--json")).queues[0].noFlowDropped;
    assert.notEqual(ping().status, 0, "echo matched a TCP-only flow");
    const after = JSON.parse(f.nflb("stats", "--name", "web", "--json")).queues[0].noFlowDropped;
    assert.ok(after - before >= 2, `no-flow drops ${after - before}`);
    await daemon?.stop();
    daemon = await f.daemonWith("web", "--queue", QUEUE, "--promiscuous-ping");
    const r = ping();
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  test("flows survive a daemon restart", async () => {
    await daemon?.stop("SIGKILL");
    daemon = await f.daemon("web", QUEUE);
    assert.deepEqual(await spread(VIP, 8081, 10), { t3: 10 });
    assert.deepEqual(await spread(VIP2, 8080, 5), { t2: 5 });
  });
});
