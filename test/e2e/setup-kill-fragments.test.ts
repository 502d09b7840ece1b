// `nflb setup` and `nflb teardown` killed by SIGKILL at every operation boundary in dsr
// --fragments --tier-peer mode (ip routes and rules, a TUN device, nft, iptables): a
// teardown afterwards always restores the namespace exactly. See setup-kill-nat.test.ts.
import { after, before, describe, test } from "node:test";
import {
  assertSweeps,
  KILL_MODES,
  type SweepBed,
  sweepBed,
  sweepSetupKills,
  sweepTeardownKills,
} from "../helpers/killsweep.js";
import { isRoot, Topology } from "../helpers/netns.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

describe("setup and teardown killed at every step boundary: dsr --fragments --tier-peer", {
  skip,
}, () => {
  const topo = new Topology();
  let a: SweepBed & { close(): void };
  let b: SweepBed & { close(): void };

  before(async () => {
    [a, b] = await Promise.all([sweepBed(topo, "kf"), sweepBed(topo, "kt")]);
  });
  after(() => {
    a?.close();
    b?.close();
    topo.destroy();
  });

  test("setup killed, then teardown; teardown killed, then teardown: exactly as before", async (t) => {
    const mode = KILL_MODES.dsrFragments;
    const [setupKills, teardownKills] = await Promise.all([
      sweepSetupKills({ ...a, name: "ks", mode }),
      sweepTeardownKills({ ...b, name: "kt", mode }),
    ]);
    assertSweeps(t, [
      [`${mode.label} setup`, setupKills],
      [`${mode.label} teardown`, teardownKills],
    ]);
  });
});
