// The table rules: which targets the Maglev table is built from (active, admin, health,
// the all-down policy), which keep their connections, and the edits that change them.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildMaglevTable } from "../../src/maglev/maglev.js";
import {
  ADMIN_STATES,
  type AdminState,
  type AllDownPolicy,
  activateTargets,
  deactivateTargets,
  decideTable,
  ensureActiveTargets,
  HEALTHS,
  type Health,
  initState,
  keepsConnections,
  openState,
  setAdmin,
  setAllDownPolicy,
  setHealth,
  type TargetSlot,
} from "../../src/state/store.js";
import { nflb, tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
before(() => {
  process.env.NFLB_STATE_DIR = dirs.dir;
});
after(() => dirs.cleanup());

function slot(fwmark: number, over: Partial<TargetSlot> = {}): TargetSlot {
  return {
    slot: fwmark,
    fwmark,
    weight: 1,
    active: true,
    admin: "enabled",
    health: "unknown",
    downSeq: 0,
    inTable: false,
    ...over,
  };
}

describe("table rules", () => {
  test("every combination of active x admin x health, next to a serving target", () => {
    for (const policy of ["keep-last", "none"] as AllDownPolicy[]) {
      for (const active of [true, false]) {
        for (const admin of ADMIN_STATES) {
          for (const health of HEALTHS) {
            const t = slot(2, { active, admin, health, downSeq: health === "down" ? 1 : 0 });
            const d = decideTable([slot(1, { health: "up" }), t], policy);
            const expected = active && admin === "enabled" && health !== "down";
            const label = `${policy} active=${active} admin=${admin} health=${health}`;
            assert.equal(
              d.members.some((m) => m.fwmark === 2),
              expected,
              label,
            );
            assert.ok(
              d.members.some((m) => m.fwmark === 1),
              `${label}: the serving one stays`,
            );
            assert.equal(d.allDown, false, label);
            const reason = d.reasons.get(2);
            const why = !active
              ? "inactive"
              : admin !== "enabled"
                ? admin === "disabled"
                  ? "disabled"
                  : "drain"
                : health === "down"
                  ? "down"
                  : "serving";
            assert.equal(reason, why, label);
            // Connections: kept in the table and while draining (unless the target is down).
            const inTable = { ...t, inTable: expected };
            assert.equal(
              keepsConnections(inTable),
              expected || (active && admin === "drain" && health !== "down"),
              `${label}: keepsConnections`,
            );
          }
        }
      }
    }
  });

  test("keep-last: when health takes every candidate out, those taken out last stay", () => {
    const targets = [slot(1), slot(2), slot(3), slot(4, { admin: "disabled" })];
    setHealth(targets, [{ fwmark: 1, health: "down" }]);
    setHealth(targets, [
      { fwmark: 2, health: "down" },
      { fwmark: 3, health: "down" },
    ]);
    assert.deepEqual(
      targets.map((t) => t.downSeq),
      [1, 2, 2, 0],
    );
    const keep = decideTable(targets, "keep-last");
    assert.equal(keep.allDown, true);
    assert.deepEqual(
      keep.members.map((t) => t.fwmark),
      [2, 3],
      "the two taken out together, last; never the disabled one",
    );
    assert.equal(keep.reasons.get(2), "kept-last");
    assert.equal(keep.reasons.get(1), "down");
    assert.equal(keep.reasons.get(4), "disabled");
    const none = decideTable(targets, "none");
    assert.equal(none.allDown, true);
    assert.deepEqual(none.members, [], "none: the table empties");
    // One comes back: it alone serves, whatever the policy.
    setHealth(targets, [{ fwmark: 1, health: "up" }]);
    for (const p of ["keep-last", "none"] as AllDownPolicy[]) {
      assert.deepEqual(
        decideTable(targets, p).members.map((t) => t.fwmark),
        [1],
      );
    }
    // Down again: now it is the last one taken out.
    setHealth(targets, [{ fwmark: 1, health: "down" }]);
    assert.deepEqual(
      decideTable(targets, "keep-last").members.map((t) => t.fwmark),
      [1],
    );
  });

  test("admin out of the table is not all-down: drain and disable of every target empty it", () => {
    const targets = [slot(1, { admin: "drain" }), slot(2, { admin: "disabled" })];
    const d = decideTable(targets, "keep-last");
    assert.equal(d.allDown, false);
    assert.deepEqual(d.members, []);
  });

  test("health never changes the admin state; admin survives deactivate and activate", () => {
    const targets: TargetSlot[] = [];
    activateTargets(targets, [1, 2], 1, 8);
    setAdmin(targets, [1], "drain");
    setHealth(targets, [
      { fwmark: 1, health: "up" },
      { fwmark: 2, health: "down" },
    ]);
    assert.equal(targets[0].admin, "drain");
    deactivateTargets(targets, [1]);
    activateTargets(targets, [1], 5, 8);
    assert.deepEqual(
      [targets[0].admin, targets[0].health, targets[0].weight, targets[0].active],
      ["drain", "up", 5, true],
    );
    assert.throws(() => setAdmin(targets, [9], "disabled"), /unknown fwmark 9/);
    assert.throws(() => setAdmin(targets, [1], "off" as AdminState), /invalid admin state/);
    assert.throws(
      () => setHealth(targets, [{ fwmark: 1, health: "sick" as Health }]),
      /invalid health/,
    );
    assert.throws(() => setHealth(targets, [{ fwmark: 9, health: "up" }]), /unknown fwmark 9/);
  });
});

describe("published through StateFile.update", () => {
  test("the table is the Maglev table of the members; inTable, admin, health and policy are published", () => {
    initState({
      name: "adm",
      tableSize: 1009,
      maxTargets: 8,
      ownFwmark: 0,
      hashSeed: 0,
      sctpPortsOnly: true,
      sctpEncapPort: 0,
    });
    const s = openState("adm");
    s.update((t) => activateTargets(t, [1, 2, 3, 4], 1, 8));
    s.update((t) => {
      setAdmin(t, [2], "drain");
      setAdmin(t, [3], "disabled");
    });
    let snap = s.update((t) => setHealth(t, [{ fwmark: 4, health: "down" }]));
    assert.deepEqual(snap.table, buildMaglevTable([{ fwmark: 1, weight: 1 }], 1009));
    snap = s.snapshot();
    assert.deepEqual(
      snap.targets.map((t) => [t.fwmark, t.admin, t.health, t.inTable]),
      [
        [1, "enabled", "unknown", true],
        [2, "drain", "unknown", false],
        [3, "disabled", "unknown", false],
        [4, "enabled", "down", false],
      ],
    );
    // Several health changes in one generation; then every candidate down: keep-last.
    const g = s.generation();
    snap = s.update((t) =>
      setHealth(t, [
        { fwmark: 1, health: "down" },
        { fwmark: 4, health: "up" },
      ]),
    );
    assert.equal(snap.generation, g + 1);
    assert.deepEqual(
      snap.targets.filter((t) => t.inTable).map((t) => t.fwmark),
      [4],
    );
    snap = s.update((t) => setHealth(t, [{ fwmark: 4, health: "down" }]));
    assert.deepEqual(snap.table, buildMaglevTable([{ fwmark: 4, weight: 1 }], 1009), "keep-last");
    snap = s.update((_t, lb) => setAllDownPolicy(lb, "none"));
    assert.equal(snap.allDownPolicy, "none");
    assert.ok(
      snap.table.every((f) => f === 0),
      "none: empty table",
    );
    assert.equal(s.snapshot().allDownPolicy, "none", "the policy is stored");
    s.close();
  });

  test("setup's targets: one generation, weight 0 in the set without entries", () => {
    const r = ensureActiveTargets("setupst", [
      { fwmark: 1, weight: 2 },
      { fwmark: 2, weight: 1 },
      { fwmark: 3, weight: 0 },
    ]);
    assert.equal(r.created, true);
    const s = openState("setupst");
    const snap = s.snapshot();
    assert.equal(snap.generation, 2, "created (1), then one generation");
    assert.deepEqual(
      snap.table,
      buildMaglevTable(
        [
          { fwmark: 1, weight: 2 },
          { fwmark: 2, weight: 1 },
        ],
        s.config.tableSize,
      ),
    );
    assert.equal(snap.targets.find((t) => t.fwmark === 3)?.inTable, true, "in the set");
    s.close();
    assert.equal(ensureActiveTargets("setupst", [{ fwmark: 1, weight: 1 }]).created, false);
  });
});

describe("nflb target", () => {
  const env = () => ({ NFLB_STATE_DIR: dirs.dir });
  const run = (...args: string[]) => nflb(args, env());

  test("disable, drain, enable: show and fwmark follow; errors are one line", () => {
    assert.equal(run("init", "--name", "cli", "--M", "1009").status, 0);
    assert.equal(run("activate", "--name", "cli", "1", "2", "3").status, 0);
    const r = run("target", "disable", "--name", "cli", "2");
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /generation \d+: 3 active targets, 2 in the table/);
    assert.equal(run("target", "drain", "--name", "cli", "3").status, 0);
    const shown = JSON.parse(run("show", "--name", "cli", "--json").stdout);
    assert.deepEqual(
      shown.targets.map(
        (t: { fwmark: number; admin: string; inTable: boolean; reason: string }) => [
          t.fwmark,
          t.admin,
          t.inTable,
          t.reason,
        ],
      ),
      [
        [1, "enabled", true, "serving"],
        [2, "disabled", false, "disabled"],
        [3, "drain", false, "drain"],
      ],
    );
    assert.deepEqual(
      shown.targets.map((t: { keepsConnections: boolean }) => t.keepsConnections),
      [true, false, true],
    );
    assert.match(run("show", "--name", "cli").stdout, /3\s+1\s+yes\s+drain\s+unknown\s+out:drain/);
    for (let p = 1000; p < 1020; p++) {
      const out = run("fwmark", "--name", "cli", "--src", `10.0.0.1:${p}`, "--dst", "10.0.0.2:80");
      assert.equal(out.stdout.trim(), "1", "only target 1 takes new flows");
    }
    assert.equal(run("target", "enable", "--name", "cli", "2", "3").status, 0);
    const back = JSON.parse(run("show", "--name", "cli", "--json").stdout);
    assert.equal(back.targets.filter((t: { inTable: boolean }) => t.inTable).length, 3);

    for (const [args, pattern] of [
      [
        ["target", "drain", "--name", "cli", "9"],
        /^nflb: unknown fwmark 9: it was never activated\n$/,
      ],
      [["target", "disable", "--name", "cli"], /^nflb: missing required argument 'fwmark'\n$/],
      [["target", "disable", "--name", "cli", "0"], /^nflb: .*invalid fwmark "0"/],
      [["target", "off", "--name", "cli", "1"], /^nflb: unknown command 'off'/],
      [["target", "enable", "--name", "nosuch", "1"], /^nflb: no load balancer named "nosuch"/],
    ] as [string[], RegExp][]) {
      const e = run(...args);
      assert.notEqual(e.status, 0, args.join(" "));
      assert.match(e.stderr, pattern, args.join(" "));
      assert.equal(e.stderr.split("\n").length, 2, `${args.join(" ")}: one line`);
    }
    for (const verb of ["enable", "disable", "drain"]) {
      const h = run("target", verb, "--help");
      assert.equal(h.status, 0);
      assert.match(
        h.stdout,
        new RegExp(`Usage: nflb target ${verb} \\[options\\] <fwmark\\.\\.\\.>`),
      );
    }
  });
});
