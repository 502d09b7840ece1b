// Admin states with real traffic (NAT mode, three targets): disable takes a target's new
// flows away and nothing else moves; the admin state lives in the state, so it survives
// a daemon restart (SIGTERM and kill -9) and a repeated `nflb setup`; enable restores
// exactly the previous mapping. Each step uses new source ports: conntrack keeps the DNAT
// of a UDP flow it has seen, whatever the table says now.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { reciprocalScale } from "../../src/hash/jhash.js";
import { buildMaglevTable } from "../../src/maglev/maglev.js";
import { flowHash, infoFromTuple, PacketInfo } from "../../src/packet/index.js";
import { openState } from "../../src/state/store.js";
import type { Daemon } from "../helpers/daemon.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { type LbTopology, tally, udpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP = "10.200.0.1";
const NAME = "adm";
const QUEUE = "7";

describe("admin states under traffic, across daemon restarts", { skip }, () => {
  let f: LbFixture;
  let t: LbTopology;
  let daemon: Daemon;
  let firstPort = 31000;
  /** Per step: the answers a table of all three targets gives (built here, independently). */
  let predicted: string[];

  const CLIENT = "10.100.1.10";
  const COUNT = 90;

  /** Which target (t1..t3) a table of all three targets sends each flow of the next step to. */
  function predict(): string[] {
    const state = openState(NAME);
    const size = state.config.tableSize;
    state.close();
    const table = buildMaglevTable(
      [1, 2, 3].map((fwmark) => ({ fwmark, weight: 1 })),
      size,
    );
    const info = new PacketInfo();
    const opts = { sctpPortsOnly: true, sctpEncapPort: 0 };
    return Array.from({ length: COUNT }, (_, i) => {
      infoFromTuple("udp", CLIENT, firstPort + i, VIP, PORT, opts, info);
      return `t${table[reciprocalScale(flowHash(info, 0), size)]}`;
    });
  }

  const traffic = async () => {
    const answers = await udpRequests(t.client, {
      host: VIP,
      port: PORT,
      count: COUNT,
      firstPort,
      timeoutMs: 2000,
    });
    firstPort += COUNT;
    return answers;
  };
  const setupArgs = () => ["--mode", "nat", "--vip", VIP, "--queue", QUEUE, ...f.targetArgs("v4")];

  /**
   * With target 2 disabled: nobody answers as t2, every flow that all targets enabled
   * would send elsewhere keeps that target (`expected`, computed with 2 enabled).
   */
  async function assertWithout2(label: string, expected: string[]): Promise<void> {
    const answers = await traffic();
    assert.equal(tally(answers).t2 ?? 0, 0, `${label}: no new flow to t2`);
    assert.ok(!answers.some((a) => a.startsWith("ERR")), `${label}: every flow answered`);
    assert.ok(expected.filter((e) => e === "t2").length > 10, "some flows were t2's");
    answers.forEach((a, i) => {
      if (expected[i] !== "t2") assert.equal(a, expected[i], `${label}: flow ${i} kept its target`);
    });
  }

  before(async () => {
    f = LbFixture.create();
    t = f.topology;
    await f.serveNames(PORT, (i) => [t.targetAddrs[i].v4]);
    f.setup(NAME, ...setupArgs());
    daemon = await f.daemon(NAME, QUEUE);
    predicted = predict();
    const answers = await traffic();
    assert.deepEqual(answers, predicted, "the daemon answers as the Maglev table of 1, 2, 3 says");
    assert.deepEqual(Object.keys(tally(answers)).sort(), ["t1", "t2", "t3"]);
  });

  after(() => f?.close());

  test("disable: t2 gets no new flows, the others keep theirs", async () => {
    predicted = predict();
    f.nflb("target", "disable", "--name", NAME, "2");
    await assertWithout2("disabled", predicted);
  });

  test("the admin state survives a daemon restart (SIGTERM) and kill -9", async () => {
    assert.equal(await daemon.stop("SIGTERM"), 0);
    daemon = await f.daemon(NAME, QUEUE);
    await assertWithout2("after SIGTERM and restart", predict());
    await daemon.stop("SIGKILL");
    daemon = await f.daemon(NAME, QUEUE);
    await assertWithout2("after kill -9 and restart", predict());
    const shown = JSON.parse(f.nflb("show", "--name", NAME, "--json"));
    assert.deepEqual(
      shown.targets.map((x: { fwmark: number; admin: string }) => [x.fwmark, x.admin]),
      [
        [1, "enabled"],
        [2, "disabled"],
        [3, "enabled"],
      ],
    );
  });

  test("a repeated setup (same targets) keeps the admin state", async () => {
    const expected = predict();
    f.nflb("setup", "--name", NAME, ...setupArgs());
    await assertWithout2("after setup again", expected);
  });

  test("enable: exactly the first mapping again", async () => {
    f.nflb("target", "enable", "--name", NAME, "2");
    predicted = predict();
    assert.deepEqual(await traffic(), predicted);
    assert.deepEqual(Object.keys(tally(predicted)).sort(), ["t1", "t2", "t3"]);
  });
});
