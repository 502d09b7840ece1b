// `nflb setup` and `nflb teardown` killed by SIGKILL at every operation boundary (every
// tool run and every write of nflb's own files), in nat, nat --syn-only and statistic
// mode: a teardown afterwards always restores the namespace exactly (rules of every kind,
// devices, nflb's record directory). The dsr modes: setup-kill-dsr/-fragments.test.ts.
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
const MODES = [KILL_MODES.nat, KILL_MODES.synOnly, KILL_MODES.statistic];

describe("setup and teardown killed at every step boundary: nat, syn-only, statistic", {
  skip,
}, () => {
  const topo = new Topology();
  let beds: (SweepBed & { close(): void })[] = [];

  before(async () => {
    beds = await Promise.all(MODES.map((_, i) => sweepBed(topo, `k${i}`)));
  });
  after(() => {
    for (const b of beds) b.close();
    topo.destroy();
  });

  test("setup killed at every boundary, then teardown: exactly as before", async (t) => {
    const results = await Promise.all(
      MODES.map((mode, i) => sweepSetupKills({ ...beds[i], name: "ks", mode })),
    );
    assertSweeps(
      t,
      results.map((r, i) => [`${MODES[i].label} setup`, r]),
    );
  });

  test("teardown killed at every boundary, then teardown again: exactly as before", async (t) => {
    const results = await Promise.all(
      MODES.map((mode, i) => sweepTeardownKills({ ...beds[i], name: "kt", mode })),
    );
    assertSweeps(
      t,
      results.map((r, i) => [`${MODES[i].label} teardown`, r]),
    );
  });
});
