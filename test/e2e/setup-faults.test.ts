// Faults inside the steps of provisioning a service (rules + Maglev state), not only
// between steps: a failure is injected before and after every single operation (each
// tool run, each write of a record, of the builtin-chain ownership file or of the state),
// one at a time. After every failed setup the namespace and the state are exactly as
// before it. An undo registered after its change instead of before, or a missing one,
// fails here. The TUN device and teardown: setup-faults-fragments.test.ts.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { ServiceSpec } from "../../src/service/provision.js";
import { describeResult, exactly, FaultSweeper, faultSpec, same } from "../helpers/faultsweep.js";
import { isRoot, Topology } from "../helpers/netns.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const NAME = "faults";
const spec = (over: Parameters<typeof faultSpec>[1]) => faultSpec(NAME, over);

const NAT: ServiceSpec = { setup: spec({}), state: { maxTargets: 3 } };
const DSR: ServiceSpec = { setup: spec({ mode: "dsr" }), state: { maxTargets: 3 } };
/** Target 2 goes, 3 moves to another address, 4 comes (into 2's slot: N is 3). */
const DSR_CHANGED: ServiceSpec = {
  setup: spec({
    mode: "dsr",
    ports: "53",
    targets: [
      { fwmark: 1, address: "10.100.0.21", weight: 1 },
      { fwmark: 3, address: "10.100.0.33", weight: 2 },
      { fwmark: 4, address: "10.100.0.24", weight: 1 },
    ],
  }),
  state: { maxTargets: 3 },
};
const STATISTIC: ServiceSpec = { setup: spec({ mode: "statistic", statistic: "random" }) };

describe("faults inside setup steps", { skip }, () => {
  const topo = new Topology();
  let s: FaultSweeper;

  before(async () => {
    s = await FaultSweeper.create(topo, NAME);
  });
  after(() => {
    s?.close();
    topo.destroy();
  });

  const provision = (x: ServiceSpec) => () => s.provision(x);

  test("planService answers what would change, and changes nothing", async () => {
    await s.reset();
    const clean = await s.observe();
    assert.deepEqual(await s.plan(NAT), {
      rulesChange: true,
      state: {
        create: {
          tableSize: 65537,
          maxTargets: 3,
          ownFwmark: 0,
          hashSeed: 0,
          sctpPortsOnly: true,
          sctpEncapPort: 0,
        },
        activate: [1, 2, 3],
        deactivate: [],
      },
    });
    assert.deepEqual(await s.observe(), clean);
    await s.provision(NAT);
    const applied = await s.observe();
    assert.deepEqual(await s.plan(NAT), {
      rulesChange: false,
      state: { activate: [], deactivate: [] },
    });
    assert.deepEqual(
      await s.plan({ ...DSR_CHANGED, setup: { ...DSR_CHANGED.setup, mode: "nat" } }),
      {
        rulesChange: true,
        state: { activate: [3, 4], deactivate: [2] },
      },
    );
    await assert.rejects(
      s.plan({ ...NAT, state: { tableSize: 997 } }),
      /exists with other settings \(tableSize 65537, not 997\)/,
    );
    await assert.rejects(
      s.plan({
        ...NAT,
        setup: {
          ...NAT.setup,
          targets: [...NAT.setup.targets, { fwmark: 9, address: "10.100.0.29", weight: 1 }],
        },
      }),
      /cannot activate 9: all 3 target slots are in use \(init --N\); nothing was changed/,
    );
    assert.deepEqual(await s.observe(), applied);
    await s.reset();
  });

  test("nat from nothing (rules and a new state): every fault leaves nothing", async (t) => {
    const r = await s.sweep(async () => {}, NAT, exactly);
    t.diagnostic(describeResult(r));
  });

  test("dsr replacing a working dsr setup (target removed, moved, added): every fault puts it back", async (t) => {
    const r = await s.sweep(provision(DSR), DSR_CHANGED, same);
    t.diagnostic(describeResult(r));
  });

  test("statistic replacing nat (other iptables table, state kept): every fault puts nat back", async (t) => {
    const r = await s.sweep(provision(NAT), STATISTIC, same);
    t.diagnostic(describeResult(r));
  });

  test("same rules, a deactivated target: every fault keeps it deactivated", async (t) => {
    const start = async () => {
      await s.provision(NAT);
      await s.deactivate([2]);
    };
    const r = await s.sweep(start, NAT, same);
    t.diagnostic(describeResult(r));
  });
});
