// The state-backed health sink: health lands in the load balancer's shared state through
// StateFile.update + setHealth, one generation per publish, never touching admin states,
// and a checker wired to it keeps the table in step with its verdicts.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { HealthChecker } from "../../src/health/checker.js";
import type { Prober } from "../../src/health/probe/index.js";
import type { TcpCheck } from "../../src/health/spec.js";
import { MissingTargetsError, recordHealth, StateHealthSink } from "../../src/health/state-sink.js";
import {
  activateTargets,
  deleteState,
  initState,
  openState,
  setAdmin,
} from "../../src/state/store.js";
import { tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
before(() => {
  process.env.NFLB_STATE_DIR = dirs.dir;
});
after(() => dirs.cleanup());

const settings = {
  tableSize: 997,
  maxTargets: 16,
  ownFwmark: 0,
  hashSeed: 0,
  sctpPortsOnly: true,
  sctpEncapPort: 0,
};

function lb(name: string, fwmarks = [1, 2, 3]) {
  initState({ ...settings, name });
  const s = openState(name);
  s.update((t) => activateTargets(t, fwmarks, 1, 16));
  return s;
}

function health(name: string): Record<number, string> {
  const s = openState(name);
  try {
    return Object.fromEntries(s.snapshot().targets.map((t) => [t.fwmark, t.health]));
  } finally {
    s.close();
  }
}

describe("state health sink", () => {
  test("one publish is one generation; the down target leaves the table", () => {
    const s = lb("web");
    const g = s.generation();
    const sink = new StateHealthSink();
    sink.publish("web", [
      { fwmark: 1, health: "up" },
      { fwmark: 2, health: "down" },
      { fwmark: 3, health: "up" },
    ]);
    const snap = s.snapshot();
    assert.equal(snap.generation, g + 1);
    assert.deepEqual(health("web"), { 1: "up", 2: "down", 3: "up" });
    assert.deepEqual(
      snap.targets.map((t) => [t.fwmark, t.inTable]),
      [
        [1, true],
        [2, false],
        [3, true],
      ],
    );
    assert.ok(!snap.table.includes(2), "no table entry points at the down target");
    // What the state already holds is not written again.
    sink.publish("web", [{ fwmark: 1, health: "up" }]);
    assert.equal(s.generation(), g + 1);
    sink.close();
    s.close();
  });

  test("health never overrides an admin state", () => {
    const s = lb("adm");
    s.update((t) => setAdmin(t, [3], "disabled"));
    const sink = new StateHealthSink();
    sink.publish("adm", [{ fwmark: 3, health: "up" }]);
    const t3 = s.snapshot().targets.find((t) => t.fwmark === 3);
    assert.deepEqual([t3?.admin, t3?.health, t3?.inTable], ["disabled", "up", false]);
    sink.close();
    s.close();
  });

  test("every target down: the state's all-down policy decides (keep-last keeps the last ones)", () => {
    const s = lb("alldown");
    const sink = new StateHealthSink();
    sink.publish("alldown", [{ fwmark: 1, health: "down" }]);
    sink.publish("alldown", [
      { fwmark: 2, health: "down" },
      { fwmark: 3, health: "down" },
    ]);
    const snap = s.snapshot();
    assert.equal(snap.allDownPolicy, "keep-last");
    assert.deepEqual(
      snap.targets.filter((t) => t.inTable).map((t) => t.fwmark),
      [2, 3],
      "the two that went down last, in one publish, are kept together",
    );
    sink.close();
    s.close();
  });

  test("a target the state lacks: the others are written, the missing one is named", () => {
    const s = lb("miss", [1]);
    assert.throws(
      () =>
        recordHealth(s, [
          { fwmark: 1, health: "down" },
          { fwmark: 9, health: "up" },
        ]),
      (err: unknown) => err instanceof MissingTargetsError && err.fwmarks.join() === "9",
    );
    assert.equal(health("miss")[1], "down");
    s.close();
  });

  test("a re-initialised state file is reopened on the next publish", () => {
    lb("again").close();
    const sink = new StateHealthSink();
    sink.publish("again", [{ fwmark: 1, health: "down" }]);
    deleteState("again");
    lb("again").close();
    assert.throws(
      () => sink.publish("again", [{ fwmark: 2, health: "down" }]),
      /replaced or removed/,
    );
    sink.publish("again", [{ fwmark: 2, health: "down" }]);
    assert.deepEqual(health("again"), { 1: "unknown", 2: "down", 3: "unknown" });
    sink.close();
  });

  test("services map to their load balancers", () => {
    lb("lb-b").close();
    const sink = new StateHealthSink({ stateName: (service) => `lb-${service}` });
    sink.publish("b", [{ fwmark: 2, health: "down" }]);
    assert.equal(health("lb-b")[2], "down");
    sink.close();
  });

  test("a checker wired to the state: warm-up in one generation, then one per transition", async () => {
    const s = lb("live");
    const g = s.generation();
    const failing = new Set<number>();
    const prober: Prober = async (t) => {
      await sleep(1);
      return failing.has(t.fwmark)
        ? { ok: false, reason: "connection refused", latencyMs: 1 }
        : { ok: true, reason: "connected", latencyMs: 1 };
    };
    const check: TcpCheck = {
      kind: "tcp",
      intervalMs: 20,
      fastIntervalMs: 10,
      timeoutMs: 50,
      rise: 2,
      fall: 2,
      jitter: 0,
    };
    const sink = new StateHealthSink();
    const log = { notice() {}, warning() {}, info() {} };
    const checker = new HealthChecker({ sink, log, prober });
    checker.configure([
      {
        name: "live",
        port: 80,
        check,
        warmupMs: 5000,
        targets: [1, 2, 3].map((f) => ({ fwmark: f, address: `10.0.0.${f}` })),
      },
    ]);
    checker.start();
    const until = async (cond: () => boolean) => {
      const end = Date.now() + 3000;
      while (!cond()) {
        assert.ok(Date.now() < end, "timed out");
        await sleep(5);
      }
    };
    try {
      await until(() => health("live")[1] === "up");
      assert.equal(s.generation(), g + 1, "all three first verdicts in one generation");
      assert.deepEqual(health("live"), { 1: "up", 2: "up", 3: "up" });
      failing.add(2);
      await until(() => health("live")[2] === "down");
      assert.equal(s.generation(), g + 2);
      assert.equal(s.snapshot().targets.find((t) => t.fwmark === 2)?.inTable, false);
      failing.delete(2);
      await until(() => health("live")[2] === "up");
      assert.equal(s.generation(), g + 3);
    } finally {
      await checker.stop();
      sink.close();
      s.close();
    }
  });
});
