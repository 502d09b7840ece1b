// The probe schedule (a min-heap) and the warm-up tracker.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Schedule } from "../../src/health/schedule.js";
import { Warmup } from "../../src/health/warmup.js";
import { seeded } from "../helpers/healthsim.js";

describe("probe schedule", () => {
  test("next(now) takes what is due, earliest first, ties in scheduling order", () => {
    const s = new Schedule<string>();
    s.set("c", 30);
    s.set("a", 10);
    s.set("b", 10);
    s.set("d", 40);
    assert.deepEqual(s.next(5), { due: [], wakeAt: 10 });
    assert.deepEqual(s.next(30), { due: ["a", "b", "c"], wakeAt: 40 });
    assert.deepEqual(s.next(100), { due: ["d"], wakeAt: undefined });
    assert.equal(s.size, 0);
  });

  test("set replaces a key's schedule and delete removes it", () => {
    const s = new Schedule<string>();
    s.set("a", 10);
    s.set("a", 50);
    s.set("b", 20);
    s.delete("b");
    assert.equal(s.dueAt("a"), 50);
    assert.equal(s.has("b"), false);
    assert.deepEqual(s.next(30), { due: [], wakeAt: 50 });
    assert.deepEqual(s.next(50).due, ["a"]);
  });

  test("agrees with a sorted list over 20,000 random operations", () => {
    const random = seeded(3);
    const s = new Schedule<number>();
    const model = new Map<number, { due: number; seq: number }>();
    let seq = 0;
    let now = 0;
    for (let i = 0; i < 20_000; i++) {
      const op = random();
      const key = Math.floor(random() * 200);
      if (op < 0.6) {
        const due = now + Math.floor(random() * 1000);
        s.set(key, due);
        model.set(key, { due, seq: seq++ });
      } else if (op < 0.7) {
        s.delete(key);
        model.delete(key);
      } else {
        now += Math.floor(random() * 300);
        const expected = [...model]
          .filter(([, v]) => v.due <= now)
          .sort(([, a], [, b]) => a.due - b.due || a.seq - b.seq)
          .map(([k]) => k);
        for (const k of expected) model.delete(k);
        const rest = [...model.values()].map((v) => v.due);
        const got = s.next(now);
        assert.deepEqual(got.due, expected);
        assert.equal(got.wakeAt, rest.length ? Math.min(...rest) : undefined);
      }
    }
  });
});

describe("warm-up", () => {
  test("ready once every target has its first verdict", () => {
    const w = new Warmup(1000, 5000, [1, 2, 3]);
    assert.equal(w.deadline, 6000);
    assert.equal(w.verdict(1, 1100), false);
    assert.equal(w.verdict(1, 1150), false, "a second verdict of the same target");
    assert.equal(w.verdict(3, 1200), false);
    assert.deepEqual(w.waitingFor(), [2]);
    assert.equal(w.expire(5999), false);
    assert.equal(w.verdict(2, 1300), true);
    assert.deepEqual(w.ended, { at: 1300, how: "verdicts" });
    assert.equal(w.expire(7000), false, "already ended");
  });

  test("or when the warm-up time has passed, whatever is still unknown", () => {
    const w = new Warmup(0, 5000, [1, 2]);
    w.verdict(1, 10);
    assert.equal(w.expire(4999), false);
    assert.equal(w.ready, false);
    assert.equal(w.expire(5001), true);
    assert.deepEqual(w.ended, { at: 5000, how: "timeout" });
    assert.equal(w.verdict(2, 6000), false, "too late to matter");
  });

  test("nothing to wait for: ready at once; added and removed targets count", () => {
    assert.equal(new Warmup(0, 5000, []).ready, true);
    const w = new Warmup(0, 5000, [1]);
    w.add(2);
    assert.equal(w.verdict(1, 10), false);
    assert.equal(w.remove(2, 20), true, "removing the last one waited for ends it");
    w.add(3);
    assert.deepEqual(w.waitingFor(), [], "targets added after the end are not waited for");
  });
});
