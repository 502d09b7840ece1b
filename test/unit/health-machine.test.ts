// The per-target state machine: first verdict, rise/fall counts, the fast interval,
// jitter, and the flapping bound that rise/fall hysteresis guarantees.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type CheckResult,
  detectionBoundMs,
  initialState,
  isChanging,
  jittered,
  nextDueAt,
  nextWaitMs,
  observe,
  recoveryBoundMs,
  type TargetState,
  type Transition,
} from "../../src/health/machine.js";
import type { TcpCheck } from "../../src/health/spec.js";
import { seeded } from "../helpers/healthsim.js";

const ok = (at: number): CheckResult => ({ ok: true, latencyMs: 1, reason: "connected", at });
const bad = (at: number): CheckResult => ({
  ok: false,
  latencyMs: 1,
  reason: "connection refused",
  at,
});

/** Feeds a string of results ("+" success, "-" failure), one per second. */
function feed(pattern: string, t = { rise: 2, fall: 3 }, start?: TargetState) {
  let state = start ?? initialState(0);
  const transitions: (Transition & { index: number })[] = [];
  [...pattern].forEach((c, i) => {
    const r = observe(state, c === "+" ? ok(i * 1000) : bad(i * 1000), t);
    state = r.state;
    if (r.transition) transitions.push({ ...r.transition, index: i });
  });
  return { state, transitions };
}

describe("health state machine", () => {
  test("a target is unknown until its first result, which decides at once either way", () => {
    const s = initialState(5);
    assert.equal(s.health, "unknown");
    assert.equal(s.since, 5);
    const up = feed("+", { rise: 5, fall: 5 });
    assert.equal(up.state.health, "up");
    assert.deepEqual(
      up.transitions.map((t) => [t.from, t.to, t.why]),
      [["unknown", "up", "on first check"]],
    );
    const down = feed("-", { rise: 5, fall: 5 });
    assert.deepEqual(
      down.transitions.map((t) => [t.from, t.to, t.why]),
      [["unknown", "down", "on first check"]],
    );
  });

  test("fall consecutive failures take it down; a success in between starts the count again", () => {
    const r = feed("+--+---");
    assert.deepEqual(
      r.transitions.map((t) => [t.index, t.from, t.to, t.why]),
      [
        [0, "unknown", "up", "on first check"],
        [6, "up", "down", "after 3 failures"],
      ],
    );
    assert.equal(r.state.since, 6000);
    assert.equal(r.state.downs, 1);
    assert.equal(r.state.ups, 1);
    assert.equal(r.state.checks, 7);
    assert.equal(r.state.failedChecks, 5);
  });

  test("rise consecutive successes bring it back up", () => {
    const r = feed("----+-++");
    assert.deepEqual(
      r.transitions.map((t) => [t.index, t.to, t.why]),
      [
        [0, "down", "on first check"],
        [7, "up", "after 2 successes"],
      ],
    );
    // The transition carries the result that caused it.
    assert.deepEqual(r.transitions[1].result, ok(7000));
  });

  test("rise 1 and fall 1 follow every result", () => {
    const r = feed("+-+-", { rise: 1, fall: 1 });
    assert.deepEqual(
      r.transitions.map((t) => t.to),
      ["up", "down", "up", "down"],
    );
    assert.equal(r.transitions[1].why, "after 1 failure");
  });

  test("changing (fast interval) from the first disagreeing result until it settles", () => {
    const timing = { intervalMs: 2000, fastIntervalMs: 500, jitter: 0 };
    const t = { rise: 2, fall: 3 };
    let s = initialState(0);
    assert.equal(isChanging(s), true, "unknown: probe fast");
    s = observe(s, ok(0), t).state;
    assert.equal(nextWaitMs(s, timing, 0.5), 2000, "settled up");
    s = observe(s, bad(1), t).state;
    assert.equal(nextWaitMs(s, timing, 0.5), 500, "one failure: changing");
    s = observe(s, ok(2), t).state;
    assert.equal(nextWaitMs(s, timing, 0.5), 2000, "a success: settled again");
    for (let i = 0; i < 3; i++) s = observe(s, bad(3 + i), t).state;
    assert.equal(s.health, "down");
    assert.equal(nextWaitMs(s, timing, 0.5), 2000, "just went down: settled");
    s = observe(s, ok(9), t).state;
    assert.equal(nextWaitMs(s, timing, 0.5), 500, "down with one success: changing");
  });

  test("jitter stretches or shrinks each wait by up to its fraction, evenly", () => {
    assert.equal(jittered(1000, 0.2, 0), 800);
    assert.equal(jittered(1000, 0.2, 0.5), 1000);
    assert.ok(Math.abs(jittered(1000, 0.2, 1 - 1e-12) - 1200) < 1e-6);
    assert.equal(jittered(1000, 0, 0.99), 1000);
    const random = seeded(7);
    const n = 20_000;
    const buckets = new Array(10).fill(0);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const w = jittered(1000, 0.2, random());
      assert.ok(w >= 800 && w < 1200, `wait ${w} outside [800, 1200)`);
      sum += w;
      buckets[Math.floor((w - 800) / 40)]++;
    }
    assert.ok(Math.abs(sum / n - 1000) < 5, `mean ${sum / n}`);
    for (const b of buckets) assert.ok(b > 0.08 * n && b < 0.12 * n, `bucket ${b} of ${n}`);
  });

  test("the next probe starts a wait after the last one started, never before it ended", () => {
    assert.equal(nextDueAt(1000, 1010, 2000), 3000);
    assert.equal(nextDueAt(1000, 1800, 500), 1800);
  });

  test("flapping: alternating results never change a target once rise and fall are >= 2", () => {
    const r = feed("+-".repeat(5000), { rise: 2, fall: 2 });
    assert.equal(r.transitions.length, 1);
    assert.equal(r.state.health, "up");
  });

  test("flapping bound: n results after the first verdict cause <= 2*floor(n/(rise+fall))+1 transitions, each needing its own rise or fall results", () => {
    const random = seeded(42);
    for (const [rise, fall] of [
      [1, 1],
      [1, 3],
      [2, 3],
      [3, 2],
      [5, 5],
    ]) {
      for (const pFail of [0.1, 0.3, 0.5, 0.7, 0.9]) {
        const n = 5000;
        let pattern = "";
        for (let i = 0; i < n; i++) pattern += random() < pFail ? "-" : "+";
        const r = feed(pattern, { rise, fall });
        const after = r.transitions.slice(1);
        const bound = 2 * Math.floor((n - 1) / (rise + fall)) + 1;
        assert.ok(after.length <= bound, `${after.length} > ${bound} (rise ${rise} fall ${fall})`);
        for (let i = 0; i < after.length; i++) {
          const previous = i === 0 ? r.transitions[0] : after[i - 1];
          const need = after[i].to === "down" ? fall : rise;
          assert.ok(
            after[i].index - previous.index >= need,
            `transition ${i} only ${after[i].index - previous.index} results after the last`,
          );
          assert.notEqual(after[i].to, previous.to, "transitions alternate");
        }
      }
    }
  });

  test("the flapping bound is tight: fall failures then rise successes, repeated", () => {
    const rise = 2;
    const fall = 3;
    const cycles = 100;
    const r = feed(`+${"---++".repeat(cycles)}`, { rise, fall });
    const n = cycles * (rise + fall);
    assert.equal(r.transitions.length - 1, 2 * Math.floor(n / (rise + fall)));
  });

  test("detection and recovery bounds: interval x fall (+ jitter) + timeout, interval x rise", () => {
    const spec: TcpCheck = {
      kind: "tcp",
      intervalMs: 1000,
      fastIntervalMs: 500,
      timeoutMs: 300,
      rise: 2,
      fall: 3,
      jitter: 0.1,
    };
    // 1000*1.1 + 2*550 + 300
    assert.equal(detectionBoundMs(spec), 2500);
    assert.ok(detectionBoundMs(spec) <= spec.intervalMs * spec.fall * 1.1 + spec.timeoutMs);
    assert.equal(recoveryBoundMs(spec), 1650);
    // A timeout longer than the fast interval spaces the failing probes instead.
    assert.equal(detectionBoundMs({ ...spec, timeoutMs: 800 }), 1100 + 2 * 800 + 800);
  });
});
