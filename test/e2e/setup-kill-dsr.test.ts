// `nflb setup` and `nflb teardown` killed by SIGKILL at every operation boundary in dsr
// mode, IPv4 and IPv6 (ip routes and rules per target), and a setup killed while it
// replaces a working nat setup by dsr: a teardown afterwards always restores the
// namespace exactly. See setup-kill-nat.test.ts.
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
const MODES = [KILL_MODES.dsr, KILL_MODES.dsr6];

describe("setup and teardown killed at every step boundary: dsr IPv4 and IPv6", { skip }, () => {
  const topo = new Topology();
  let beds: (SweepBed & { close(): void })[] = [];

  before(async () => {
    beds = await Promise.all([...MODES, KILL_MODES.nat].map((_, i) => sweepBed(topo, `k${i}`)));
  });
  after(() => {
    for (const b of beds) b.close();
    topo.destroy();
  });

  test("setup killed at every boundary (also replacing nat), then teardown: exactly as before", async (t) => {
    const [replacing, ...results] = await Promise.all([
      sweepSetupKills({ ...beds[2], name: "kr", mode: KILL_MODES.dsr, earlier: KILL_MODES.nat }),
      ...MODES.map((mode, i) => sweepSetupKills({ ...beds[i], name: "ks", mode })),
    ]);
    assertSweeps(t, [
      ...results.map((r, i): [string, typeof r] => [`${MODES[i].label} setup`, r]),
      ["dsr replacing nat, setup", replacing],
    ]);
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
