// The pure parts of provisioning a service and of fault injection: which targets a setup
// activates and deactivates in the Maglev state, and where an operation fault strikes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  isOperationFault,
  operation,
  parseOperationFault,
  withOperationFault,
} from "../../src/netfilter/faults.js";
import { SetupError } from "../../src/netfilter/index.js";
import { setServiceTargets } from "../../src/service/provision.js";
import type { TargetSlot } from "../../src/state/store.js";

const slot = (slot: number, fwmark: number, weight = 1, active = true): TargetSlot => ({
  slot,
  fwmark,
  weight,
  active,
  admin: "enabled",
  health: "unknown",
  downSeq: 0,
  inTable: false,
});
const want = (...marks: [number, number][]) =>
  marks.map(([fwmark, weight]) => ({ fwmark, address: `10.0.0.${fwmark}`, weight }));

describe("setServiceTargets: the state's active targets become the service's", () => {
  test("from nothing: every target active with its weight, slots 0..", () => {
    const t: TargetSlot[] = [];
    const r = setServiceTargets(t, want([1, 1], [2, 3], [3, 1]), 100);
    assert.deepEqual(r, { activate: [1, 2, 3], deactivate: [] });
    assert.deepEqual(
      t.sort((a, b) => a.slot - b.slot),
      [slot(0, 1), slot(2, 2, 3), slot(1, 3)].sort((a, b) => a.slot - b.slot),
    );
  });

  test("nothing to do: nothing reported, nothing changed", () => {
    const t = [slot(0, 1), slot(1, 2, 3)];
    const r = setServiceTargets(t, want([1, 1], [2, 3]), 2);
    assert.deepEqual(r, { activate: [], deactivate: [] });
    assert.deepEqual(t, [slot(0, 1), slot(1, 2, 3)]);
  });

  test("a target left out is deactivated and its slot serves a new one (N full)", () => {
    const t = [slot(0, 1), slot(1, 2)];
    const r = setServiceTargets(t, want([1, 1], [3, 1]), 2);
    assert.deepEqual(r, { activate: [3], deactivate: [2] });
    assert.deepEqual(t, [slot(0, 1), slot(1, 3)]);
  });

  test("a target left out keeps its admin state and health (for when it returns)", () => {
    const t = [{ ...slot(0, 1), admin: "drain" as const, health: "down" as const }, slot(1, 2)];
    setServiceTargets(t, want([2, 1]), 2);
    assert.deepEqual(t[0], { ...slot(0, 1, 1, false), admin: "drain", health: "down" });
    setServiceTargets(t, want([1, 1], [2, 1]), 2);
    assert.deepEqual(t[0], { ...slot(0, 1), admin: "drain", health: "down" });
  });

  test("a deactivated target is activated again; a new weight counts as a change", () => {
    const t = [slot(0, 1, 1, false), slot(1, 2)];
    const r = setServiceTargets(t, want([1, 1], [2, 5]), 2);
    assert.deepEqual(r, { activate: [1, 2], deactivate: [] });
    assert.deepEqual(t, [slot(0, 1), slot(1, 2, 5)]);
  });

  test("more targets than slots: the state's error, before anything is applied", () => {
    const t = [slot(0, 1), slot(1, 2)];
    assert.throws(
      () => setServiceTargets(t, want([1, 1], [2, 1], [3, 1]), 2),
      /cannot activate 3: all 2 target slots are in use/,
    );
  });

  test("weight 0 (setup allows it): active, no share", () => {
    const t: TargetSlot[] = [];
    setServiceTargets(t, want([1, 0], [2, 1]), 10);
    assert.deepEqual(
      t.find((x) => x.fwmark === 1),
      slot(0, 1, 0),
    );
  });
});

describe("operation faults", () => {
  test("parse: fail|kill-before|after:N", () => {
    assert.deepEqual(parseOperationFault("kill-after:12"), {
      action: "kill",
      when: "after",
      op: 12,
    });
    assert.deepEqual(parseOperationFault(" fail-before:1 "), {
      action: "fail",
      when: "before",
      op: 1,
    });
    for (const bad of ["kill-after:0", "fail:3", "crash-after:2", "fail-after:x", ""]) {
      assert.throws(() => parseOperationFault(bad), SetupError, bad);
    }
    assert.equal(isOperationFault(parseOperationFault("fail-after:2")), true);
    assert.equal(isOperationFault("after-nft"), false);
  });

  test("strikes exactly at operation N, before or after it takes effect; unarmed: never", () => {
    const run = (fault?: Parameters<typeof withOperationFault>[0]) => {
      const done: string[] = [];
      let error = "";
      try {
        withOperationFault(fault, () => {
          for (const name of ["a", "b", "c"]) operation(name, () => done.push(name));
        });
      } catch (err) {
        error = (err as Error).message;
      }
      return { done: done.join(""), error };
    };
    assert.deepEqual(run(), { done: "abc", error: "" });
    assert.deepEqual(run({ action: "fail", when: "before", op: 2 }), {
      done: "a",
      error: "injected failure before operation 2 (b)",
    });
    assert.deepEqual(run({ action: "fail", when: "after", op: 2 }), {
      done: "ab",
      error: "injected failure after operation 2 (b)",
    });
    assert.deepEqual(run({ action: "fail", when: "after", op: 4 }), { done: "abc", error: "" });
    // Disarmed afterwards: operations outside run freely.
    assert.equal(
      operation("x", () => 7),
      7,
    );
  });

  test("a nested arming keeps counting into the outer one", () => {
    const seen: string[] = [];
    assert.throws(
      () =>
        withOperationFault({ action: "fail", when: "before", op: 3 }, () => {
          operation("a", () => seen.push("a"));
          withOperationFault({ action: "fail", when: "before", op: 1 }, () => {
            operation("b", () => seen.push("b"));
            operation("c", () => seen.push("c"));
          });
        }),
      /before operation 3 \(c\)/,
    );
    assert.deepEqual(seen, ["a", "b"]);
  });
});
