// Faults inside steps (see setup-faults.test.ts) for the setup with the most kinds of
// objects, dsr --fragments --tier-peer (ip routes and rules, a TUN device, nft, iptables),
// and for teardown: after a failure at any operation of a teardown, a second teardown
// leaves the namespace exactly as before the setup.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { ServiceSpec } from "../../src/service/provision.js";
import { describeResult, exactly, FaultSweeper, faultSpec } from "../helpers/faultsweep.js";
import { isRoot, Topology } from "../helpers/netns.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const NAME = "faults";

const FRAGMENTS: ServiceSpec = {
  setup: faultSpec(NAME, {
    mode: "dsr",
    protocols: ["udp"],
    ports: "",
    fragments: { queue: 1, tun: "nflb-faults" },
    tierPeers: [{ fwmark: 102, address: "10.100.0.3" }],
  }),
};

describe("faults inside the steps of a dsr --fragments setup and of teardown", { skip }, () => {
  const topo = new Topology();
  let s: FaultSweeper;

  before(async () => {
    s = await FaultSweeper.create(topo, NAME);
  });
  after(() => {
    s?.close();
    topo.destroy();
  });

  test("dsr --fragments --tier-peer from nothing (TUN device): every fault leaves nothing", async (t) => {
    const r = await s.sweep(async () => {}, FRAGMENTS, exactly);
    t.diagnostic(describeResult(r));
    assert.ok(r.operations >= 30);
  });

  test("teardown: after a fault at any operation, a second teardown leaves nothing", async (t) => {
    const r = await s.sweepTeardown(FRAGMENTS);
    t.diagnostic(describeResult(r));
    assert.ok(r.operations >= 20);
  });
});
