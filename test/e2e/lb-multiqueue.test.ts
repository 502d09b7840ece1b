// Several queues served by one daemon (one worker thread each), and what happens to
// packets when no target is active.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { type LbTopology, tally, tcpRequests, udpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP = "10.200.0.1";
const NAME = "mq";
// 16 client addresses: the chance that all hash to one of two queues is 2^-15.
const CLIENTS = Array.from({ length: 16 }, (_, i) => `10.100.1.${11 + i}`);

interface QueueStats {
  queue: number;
  packets: number;
  marked: number;
  noTargetDropped: number;
}

describe("nflb lb with queues 10:11", { skip }, () => {
  let f: LbFixture;
  let t: LbTopology;

  before(async () => {
    f = LbFixture.create();
    t = f.topology;
    for (const address of CLIENTS) {
      t.client.exec("ip", ["addr", "add", `${address}/24`, "dev", "eth0"]);
    }
    await f.serveNames(PORT, (i) => [t.targetAddrs[i].v4]);
    f.setup(NAME, "--mode", "nat", "--vip", VIP, "--queue", "10:11", ...f.targetArgs("v4"));
    await f.daemon(NAME, "10:11");
  });

  after(() => f?.close());

  const stats = () =>
    JSON.parse(f.nflb("stats", "--name", NAME, "--json")) as {
      queues: QueueStats[];
      targets: { fwmark: number; packets: number }[];
    };

  test("both queues carry traffic; every connection succeeds; counters add up", async () => {
    // The kernel spreads --queue-balance by addresses, so several clients are needed.
    const answers: string[] = [];
    for (const [i, address] of CLIENTS.entries()) {
      answers.push(
        ...(await tcpRequests(t.client, {
          host: VIP,
          port: PORT,
          count: 13,
          firstPort: 25000 + 100 * i,
          localAddress: address,
        })),
      );
    }
    const counts = tally(answers);
    assert.equal(
      (counts.t1 ?? 0) + (counts.t2 ?? 0) + (counts.t3 ?? 0),
      CLIENTS.length * 13,
      JSON.stringify(counts),
    );
    const s = stats();
    assert.deepEqual(
      s.queues.map((q) => q.queue),
      [10, 11],
    );
    for (const q of s.queues) assert.ok(q.packets > 0, `queue ${q.queue} saw no packet`);
    const marked = s.queues.reduce((n, q) => n + q.marked, 0);
    assert.equal(
      s.targets.reduce((n, x) => n + x.packets, 0),
      marked,
    );
  });

  test("no active target: packets are dropped and counted; activate brings traffic back", async () => {
    f.nflb("deactivate", "--name", NAME, "1", "2", "3");
    const droppedBefore = stats().queues.reduce((n, q) => n + q.noTargetDropped, 0);
    const none = await udpRequests(t.client, {
      host: VIP,
      port: PORT,
      count: 4,
      firstPort: 26000,
      timeoutMs: 600,
    });
    assert.ok(
      none.every((a) => a.startsWith("ERR")),
      JSON.stringify(none),
    );
    const droppedAfter = stats().queues.reduce((n, q) => n + q.noTargetDropped, 0);
    // Each request is sent up to three times.
    assert.ok(droppedAfter - droppedBefore >= 4, `dropped ${droppedAfter - droppedBefore}`);
    f.nflb("activate", "--name", NAME, "1", "2", "3");
    const back = await udpRequests(t.client, {
      host: VIP,
      port: PORT,
      count: 10,
      firstPort: 26100,
    });
    assert.ok(
      back.every((a) => /^t[123]$/.test(a)),
      JSON.stringify(back),
    );
  });
});
