// `nflb setup` is all or nothing, rules and Maglev state together (issue 9.1): a re-setup
// whose state part cannot work is refused before anything changes, and the service keeps
// answering; a re-setup that drops a target frees its slot for a new one; a damaged
// state is refused without touching it. Faults inside the transaction: setup-faults*.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { tryNflbIn } from "../helpers/daemon.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { ruleSnapshot } from "../helpers/rulesnap.js";
import { type LbTopology, tally, tcpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP = "10.200.0.1";
const NAME = "txlb";
const QUEUE = "5";

describe("nflb setup: rules and state all or nothing", { skip }, () => {
  let f: LbFixture;
  let t: LbTopology;

  before(async () => {
    f = LbFixture.create();
    t = f.topology;
    await f.serveNames(PORT, (i) => [t.targetAddrs[i].v4]);
    f.nflb("init", "--name", NAME, "--N", "2");
    f.setup(NAME, ...setupArgs([1, 2]));
    await f.daemon(NAME, QUEUE);
  });
  after(() => f?.close());

  function setupArgs(targets: number[]): string[] {
    return [
      "--mode",
      "nat",
      "--vip",
      VIP,
      "--queue",
      QUEUE,
      ...targets.flatMap((i) => ["--target", `${i}=${t.targetAddrs[i - 1].v4}`]),
    ];
  }

  const state = () => {
    const s = JSON.parse(f.nflb("show", "--name", NAME, "--json"));
    delete s.generation;
    return s;
  };
  const requests = async (firstPort: number) =>
    tally(await tcpRequests(t.client, { host: VIP, port: PORT, count: 60, firstPort }));

  test("a re-setup with a third target in a state of N=2 is refused first; the service keeps answering", async () => {
    const served = await requests(20000);
    assert.deepEqual(Object.keys(served).sort(), ["t1", "t2"], JSON.stringify(served));
    const rules = ruleSnapshot(t.lb);
    const targets = state();

    const r = tryNflbIn(t.lb, "setup", "--name", NAME, ...setupArgs([1, 2, 3]));
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /^nflb: load balancer "txlb": cannot activate 3: all 2 target slots are in use \(init --N\); nothing was changed\n$/,
    );
    // Not a rule, not a target changed (before, setup replaced the rules, then removed them).
    assert.equal(ruleSnapshot(t.lb), rules);
    assert.deepEqual(state(), targets);
    const still = await requests(21000);
    assert.deepEqual(Object.keys(still).sort(), ["t1", "t2"], JSON.stringify(still));
  });

  test("a re-setup that drops target 2 for target 3 reuses its slot; traffic follows", async () => {
    f.nflb("setup", "--name", NAME, ...setupArgs([1, 3]));
    const s = state();
    const active = s.targets.filter((x: { active: boolean }) => x.active);
    assert.deepEqual(
      active.map((x: { fwmark: number }) => x.fwmark).sort(),
      [1, 3],
      JSON.stringify(s.targets),
    );
    const served = await requests(22000);
    assert.deepEqual(Object.keys(served).sort(), ["t1", "t3"], JSON.stringify(served));
    // Back as it was, for the other tests.
    f.nflb("setup", "--name", NAME, ...setupArgs([1, 2]));
  });

  test("a damaged state is refused before any rule is made, and left as it is", () => {
    const path = join(f.stateDir, "dmg");
    const junk = Buffer.alloc(100, 0x5a);
    writeFileSync(path, junk);
    const rules = ruleSnapshot(t.lb);
    const r = tryNflbIn(t.lb, "setup", "--name", "dmg", ...setupArgs([1, 2]));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^nflb: load balancer "dmg": .*; nothing was changed\n$/);
    assert.equal(ruleSnapshot(t.lb), rules);
    assert.deepEqual(readFileSync(path), junk);
    // --no-activate: the rules only, the state is not looked at.
    f.setup("dmg", ...setupArgs([1, 2]), "--vip", "10.200.0.2", "--no-activate");
    assert.match(ruleSnapshot(t.lb), /table inet nflb_dmg/);
  });
});
