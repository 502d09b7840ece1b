// The health engine in simulated time: hours of checks in milliseconds of real time, with
// outages of both kinds (refused: immediate; blackhole: the timeout), warm-up, jitter,
// the fast interval, reconfiguration and the order of events.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HealthEngine, type TargetRef } from "../../src/health/engine.js";
import {
  detectionBoundMs,
  initialState,
  isChanging,
  observe,
  recoveryBoundMs,
} from "../../src/health/machine.js";
import type { HealthServiceSpec, TcpCheck } from "../../src/health/spec.js";
import { HealthConfigError } from "../../src/health/validate.js";
import { type Answer, Sim, seeded, type World } from "../helpers/healthsim.js";

const HOUR = 3_600_000;

function tcp(over: Partial<TcpCheck> = {}): TcpCheck {
  return {
    kind: "tcp",
    intervalMs: 2000,
    fastIntervalMs: 500,
    timeoutMs: 400,
    rise: 2,
    fall: 3,
    jitter: 0.1,
    ...over,
  };
}

function service(
  name: string,
  fwmarks: number[],
  over: Partial<HealthServiceSpec> = {},
): HealthServiceSpec {
  return {
    name,
    port: 80,
    check: tcp(),
    warmupMs: 10_000,
    targets: fwmarks.map((f) => ({ fwmark: f, address: `10.0.0.${f}` })),
    ...over,
  };
}

const up: Answer = { ok: true, latencyMs: 1, reason: "connected" };
const refused: Answer = { ok: false, latencyMs: 1, reason: "connection refused" };

/** Outages [start, end) per fwmark; during one the answer is `fault`. */
function outages(
  windows: Map<number, [number, number][]>,
  fault: (fwmark: number) => Answer,
): World {
  return (t: TargetRef, at: number) => {
    const inside = windows.get(t.fwmark)?.some(([s, e]) => at >= s && at < e);
    return inside ? fault(t.fwmark) : up;
  };
}

function transitionsOf(sim: Sim, fwmark: number) {
  return sim.record.transitions.filter((t) => t.target.fwmark === fwmark);
}

describe("health engine, simulated", () => {
  test("10 hours, 80 outages: each detected within interval x fall + timeout, repaired within interval x rise", () => {
    const spec = tcp();
    const random = seeded(1);
    const windows = new Map<number, [number, number][]>();
    for (const fwmark of [2, 3]) {
      const list: [number, number][] = [];
      let t = 60_000;
      for (let i = 0; i < 40; i++) {
        const start = t + Math.floor(random() * 300_000);
        const end = start + 30_000 + Math.floor(random() * 270_000);
        list.push([start, end]);
        t = end + 60_000;
      }
      windows.set(fwmark, list);
    }
    // Target 2's server is killed (refused at once), target 3 is blackholed (timeouts).
    const blackhole: Answer = { ok: false, latencyMs: spec.timeoutMs, reason: "timeout" };
    const world = outages(windows, (f) => (f === 2 ? refused : blackhole));
    const started = performance.now();
    const sim = new Sim(new HealthEngine(seeded(2)), world);
    sim.engine.configure([service("web", [1, 2, 3], { check: spec })], 0);
    sim.runUntil(10 * HOUR);
    const realMs = performance.now() - started;

    assert.equal(
      transitionsOf(sim, 1).length,
      1,
      "the healthy target changes once: its first verdict",
    );
    const detect = detectionBoundMs(spec);
    const recover = recoveryBoundMs(spec) + 1; // + the probe's 1 ms latency
    const figures: Record<number, { detect: number[]; recover: number[] }> = {};
    for (const fwmark of [2, 3]) {
      const list = windows.get(fwmark) ?? [];
      const ts = transitionsOf(sim, fwmark);
      assert.equal(
        ts.length,
        1 + 2 * list.length,
        `target ${fwmark}: one down and one up per outage`,
      );
      figures[fwmark] = { detect: [], recover: [] };
      list.forEach(([start, end], i) => {
        const down = ts[1 + 2 * i];
        const back = ts[2 + 2 * i];
        assert.equal(down.to, "down");
        assert.equal(back.to, "up");
        const d = down.at - start;
        const r = back.at - end;
        figures[fwmark].detect.push(d);
        figures[fwmark].recover.push(r);
        assert.ok(d <= detect, `target ${fwmark} outage ${i}: detected after ${d} > ${detect} ms`);
        assert.ok(r <= recover, `target ${fwmark} outage ${i}: back after ${r} > ${recover} ms`);
        // fall is honoured: at least fall - 1 fast intervals between first and last failure.
        assert.ok(d >= (spec.fall - 1) * spec.fastIntervalMs * (1 - spec.jitter));
        assert.ok(r >= (spec.rise - 1) * spec.fastIntervalMs * (1 - spec.jitter));
      });
    }
    assert.ok(realMs < 5000, `10 simulated hours took ${realMs} ms`);
    const max = (a: number[]) => Math.round(Math.max(...a));
    console.log(
      `simulated detection max: refused ${max(figures[2].detect)} ms, timeout ${max(figures[3].detect)} ms (bound ${detect}); recovery max ${max([...figures[2].recover, ...figures[3].recover])} ms (bound ${recover}); ${sim.record.probes.length} probes in ${Math.round(realMs)} ms`,
    );
  });

  test("probes come every interval (jittered) when settled and every fast interval while changing", () => {
    const spec = tcp({ jitter: 0.1 });
    const windows = new Map([[1, [[HOUR / 2, HOUR / 2 + 60_000]] as [number, number][]]]);
    const sim = new Sim(
      new HealthEngine(seeded(5)),
      outages(windows, () => refused),
    );
    sim.engine.configure([service("web", [1], { check: spec })], 0);
    sim.runUntil(HOUR);
    const starts = sim.record.probes.map((p) => p.startedAt);
    const results = sim.record.results.map((r) => r.result);
    // Replays the results: the state after each one sets the pace of the next probe.
    let state = initialState(0);
    let fast = 0;
    for (let i = 1; i < starts.length; i++) {
      state = observe(state, results[i - 1], spec).state;
      const base = isChanging(state) ? spec.fastIntervalMs : spec.intervalMs;
      if (isChanging(state)) fast++;
      const gap = starts[i] - starts[i - 1];
      assert.ok(
        gap >= base * (1 - spec.jitter) - 1e-9 && gap < base * (1 + spec.jitter),
        `gap ${gap} after ${results[i - 1].reason} (base ${base})`,
      );
    }
    // The outage: one fast probe to go down (fall - 1 of them), rise - 1 to come back.
    assert.equal(fast, spec.fall - 1 + spec.rise - 1);
  });

  test("jitter keeps targets out of lock-step; without it they stay together", () => {
    const lockstep = (jitter: number) => {
      const spec = tcp({ jitter });
      const sim = new Sim(new HealthEngine(seeded(9)), () => up);
      sim.engine.configure([service("web", [1, 2], { check: spec })], 0);
      sim.runUntil(HOUR);
      const a = sim.record.probes.filter((p) => p.target.fwmark === 1).map((p) => p.startedAt);
      const b = sim.record.probes.filter((p) => p.target.fwmark === 2).map((p) => p.startedAt);
      const together = a.filter((t) => b.some((u) => Math.abs(u - t) < 20)).length;
      return together / a.length;
    };
    assert.equal(lockstep(0), 1);
    assert.ok(lockstep(0.1) < 0.1, `with jitter ${lockstep(0.1)} of probes within 20 ms`);
  });

  test("warm-up: nothing is published until every target has its first verdict, then all at once", () => {
    const spec = tcp({ jitter: 0.2 });
    const latency: Record<number, number> = { 1: 5, 2: 50, 3: 300 };
    const world: World = (t) => ({
      ...(t.fwmark === 2 ? refused : up),
      latencyMs: latency[t.fwmark],
    });
    const sim = new Sim(new HealthEngine(seeded(11)), world, 1000);
    sim.engine.configure([service("web", [1, 2, 3], { check: spec })], 1000);
    assert.equal(sim.engine.isReady("web"), false);
    sim.runUntil(1000 + spec.jitter * spec.fastIntervalMs);
    // Every first probe starts within jitter x fastInterval of the start.
    assert.equal(sim.record.probes.length, 3);
    sim.runUntil(20_000);
    assert.equal(sim.engine.isReady("web"), true);
    assert.deepEqual(sim.record.log.slice(0, 5), [
      "transition web/1 unknown->up",
      "transition web/2 unknown->down",
      "transition web/3 unknown->up",
      "warmup web verdicts",
      "update web warm-up 1=up,2=down,3=up",
    ]);
    const w = sim.record.warmups[0];
    assert.equal(w.at, sim.record.transitions[2].at, "ends with the last first verdict");
    assert.deepEqual([w.up, w.down, w.unknown], [2, 1, []]);
  });

  test("warm-up is bounded: after warmupMs the known verdicts go out, the late target follows alone", () => {
    const spec = tcp({ jitter: 0, timeoutMs: 3000, intervalMs: 5000, fastIntervalMs: 4000 });
    const world: World = (t) =>
      t.fwmark === 3 ? { ...refused, latencyMs: 3000, reason: "timeout" } : up;
    const sim = new Sim(new HealthEngine(seeded(12)), world);
    sim.engine.configure([service("web", [1, 2, 3], { check: spec, warmupMs: 1000 })], 0);
    sim.runUntil(10_000);
    assert.deepEqual(sim.record.log.slice(0, 6), [
      "transition web/1 unknown->up",
      "transition web/2 unknown->up",
      "warmup web timeout",
      "update web warm-up timeout 1=up,2=up",
      "transition web/3 unknown->down",
      "update web transition 3=down",
    ]);
    assert.equal(sim.record.updates[0].at, 1000);
    assert.deepEqual(sim.record.warmups[0].unknown, [3]);
  });

  test("after warm-up each transition is published right after it, in time order", () => {
    const spec = tcp();
    const windows = new Map<number, [number, number][]>([
      [1, [[100_000, 200_000]]],
      [2, [[150_000, 400_000]]],
    ]);
    const sim = new Sim(
      new HealthEngine(seeded(13)),
      outages(windows, () => refused),
    );
    sim.engine.configure([service("web", [1, 2], { check: spec })], 0);
    sim.runUntil(HOUR);
    const log = sim.record.log.filter((l) => !l.startsWith("warmup"));
    assert.deepEqual(log.slice(3), [
      "transition web/1 up->down",
      "update web transition 1=down",
      "transition web/2 up->down",
      "update web transition 2=down",
      "transition web/1 down->up",
      "update web transition 1=up",
      "transition web/2 down->up",
      "update web transition 2=up",
    ]);
    const times = sim.record.transitions.map((t) => t.at);
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
    );
    for (const t of sim.record.transitions) assert.equal(t.at, t.result.at);
  });

  test("a reload keeps unchanged targets, keeps health on new timing, resets a changed probe, drops removed ones", () => {
    const sim = new Sim(new HealthEngine(seeded(21)), (t) =>
      t.fwmark === 3 ? { ...up, latencyMs: 300 } : up,
    );
    const initial = service("web", [1, 2, 3, 5]);
    sim.engine.configure([initial], 0);
    sim.runUntil(HOUR);
    // Stop when target 3's probe is in flight, so its late answer must be ignored.
    while (!sim.engine.snapshot()[0].targets.find((t) => t.fwmark === 3)?.probing) {
      sim.runUntil(sim.now + 1);
    }
    const before = new Map(sim.engine.snapshot()[0].targets.map((t) => [t.fwmark, t]));
    const reload: HealthServiceSpec = {
      ...initial,
      targets: [
        { fwmark: 1, address: "10.0.0.1" },
        { fwmark: 2, address: "10.0.0.2", check: tcp({ intervalMs: 1000, fall: 2 }) },
        { fwmark: 4, address: "10.0.0.4" },
        { fwmark: 5, address: "10.0.0.5", check: tcp({ port: 8080 }) },
      ],
    };
    const now = sim.now;
    const summary = sim.engine.configure([reload], now);
    assert.deepEqual(
      summary.added.map((t) => t.fwmark),
      [4],
    );
    assert.deepEqual(
      summary.removed.map((t) => t.fwmark),
      [3],
    );
    assert.deepEqual(
      summary.reset.map((t) => [t.fwmark, t.port]),
      [[5, 8080]],
    );
    assert.deepEqual(
      summary.retimed.map((t) => t.fwmark),
      [2],
    );
    assert.equal(summary.unchanged, 1);
    assert.deepEqual(
      summary.cancelled.map((c) => c.key.endsWith("3")),
      [true],
    );
    const after = new Map(sim.engine.snapshot()[0].targets.map((t) => [t.fwmark, t]));
    assert.deepEqual(after.get(1), before.get(1), "unchanged: everything kept, schedule too");
    const t2 = after.get(2);
    const b2 = before.get(2);
    assert.ok(t2 && b2);
    assert.deepEqual(
      [t2.health, t2.since, t2.checks, t2.ups],
      [b2.health, b2.since, b2.checks, b2.ups],
    );
    assert.ok((t2.nextCheckAt ?? Infinity) <= now + 1000 * 1.1, "new interval applies at once");
    assert.equal(after.has(3), false);
    assert.equal(after.get(4)?.health, "unknown");
    assert.equal(after.get(5)?.health, "unknown");
    assert.equal(sim.engine.isReady("web"), true, "a ready service stays ready");
    const mark = sim.record.log.length;
    sim.runUntil(now + 5000);
    const later = sim.record.log.slice(mark);
    assert.ok(later.includes("transition web/4 unknown->up"));
    assert.ok(
      later.includes("update web transition 4=up"),
      "a new target's verdict goes out at once",
    );
    assert.ok(
      !later.some((l) => l.includes("web/3")),
      "the removed target's late answer is ignored",
    );
  });

  test("a bad configuration is refused whole and changes nothing", () => {
    const sim = new Sim(new HealthEngine(seeded(22)), () => up);
    sim.engine.configure([service("web", [1, 2])], 0);
    sim.runUntil(60_000);
    const before = JSON.stringify(sim.engine.snapshot());
    const bad = [service("web", [1, 2, 3]), service("dns", [1], { port: undefined })];
    assert.throws(() => sim.engine.configure(bad, 60_000), HealthConfigError);
    assert.throws(
      () => sim.engine.configure([service("web", [1], { check: tcp({ rise: 0 }) })], 60_000),
      /rise must be an integer >= 1/,
    );
    assert.throws(
      () => sim.engine.configure([service("web", [1, 1])], 60_000),
      /target 1: fwmark listed twice/,
    );
    assert.equal(JSON.stringify(sim.engine.snapshot()), before);
  });

  test("a service added later warms up on its own; an unchecked one is ready at once", () => {
    const sim = new Sim(new HealthEngine(seeded(23)), () => up);
    sim.engine.configure([service("web", [1])], 0);
    sim.runUntil(60_000);
    sim.engine.configure(
      [service("web", [1]), service("dns", [7, 8]), service("raw", [9], { check: undefined })],
      60_000,
    );
    assert.equal(sim.engine.isReady("dns"), false);
    assert.equal(sim.engine.isReady("raw"), true);
    sim.runUntil(70_000);
    assert.ok(sim.record.log.includes("update dns warm-up 7=up,8=up"));
  });
});
