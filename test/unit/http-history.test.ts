// The history ring behind the dashboard's charts: rates from cumulative counters, the
// 15-minute window, counter resets, targets coming and going, and the memory bound.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TargetHistoryRing } from "../../src/http/history.js";
import type { StatusSnapshot } from "../../src/service/status.js";
import { realisticStatus } from "../helpers/dashboard.js";

const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);

/** A snapshot whose targets carry the given counters ([service, fwmark, packets, bytes]). */
function snapshotWith(counters: Array<[string, number, number, number]>): StatusSnapshot {
  const s = realisticStatus(T0);
  for (const service of s.services) service.targets = [];
  for (const [name, fwmark, packets, bytes] of counters) {
    let service = s.services.find((x) => x.name === name);
    if (!service) {
      service = { ...s.services[0], name, targets: [] };
      s.services.push(service);
    }
    const base = realisticStatus(T0).services[0].targets[0];
    service.targets.push({ ...base, fwmark, packets, bytes });
  }
  return s;
}

describe("target history ring", () => {
  test("rates are counter increases over the elapsed time; the first sight gives no sample", () => {
    const ring = new TargetHistoryRing();
    assert.deepEqual(ring.record(snapshotWith([["web", 1, 1000, 100_000]]), T0), []);
    const samples = ring.record(snapshotWith([["web", 1, 3000, 400_000]]), T0 + 2000);
    assert.deepEqual(samples, [
      { service: "web", fwmark: 1, t: T0 + 2000, pps: 1000, bps: 150_000 },
    ]);
    const h = ring.history(T0 + 2000);
    assert.deepEqual(h, [
      { service: "web", fwmark: 1, samples: [{ t: T0 + 2000, pps: 1000, bps: 150_000 }] },
    ]);
  });

  test("a counter that went down was reset: counted from zero, never a negative rate", () => {
    const ring = new TargetHistoryRing();
    ring.record(snapshotWith([["web", 1, 50_000, 9_000_000]]), T0);
    const [s] = ring.record(snapshotWith([["web", 1, 300, 30_000]]), T0 + 1000);
    assert.equal(s.pps, 300);
    assert.equal(s.bps, 30_000);
  });

  test("samples closer than half a step are ignored (an extra publish does not eat the ring)", () => {
    const ring = new TargetHistoryRing({ stepMs: 1000 });
    ring.record(snapshotWith([["web", 1, 0, 0]]), T0);
    assert.equal(ring.record(snapshotWith([["web", 1, 10, 10]]), T0 + 400).length, 0);
    const [s] = ring.record(snapshotWith([["web", 1, 20, 20]]), T0 + 1000);
    assert.equal(s.pps, 20, "the ignored call did not move the baseline");
  });

  test("the window: after 20 minutes at 1 s, the history holds the last 15 minutes only", () => {
    const ring = new TargetHistoryRing();
    let packets = 0;
    const end = T0 + 20 * 60_000;
    for (let t = T0; t <= end; t += 1000) {
      packets += 100;
      ring.record(snapshotWith([["web", 1, packets, packets * 10]]), t);
    }
    const [h] = ring.history(end);
    assert.equal(h.samples.length, 15 * 60 + 1);
    assert.equal(h.samples[0].t, end - 15 * 60_000);
    assert.equal(h.samples.at(-1)?.t, end);
    assert.ok(h.samples.every((s) => s.pps === 100 && s.bps === 1000));
    assert.ok(ring.capacity < 1000, `slots per target: ${ring.capacity}`);
  });

  test("ticks that come early still cover the window (10% slack), never more than capacity", () => {
    const ring = new TargetHistoryRing({ windowMs: 60_000, stepMs: 1000 });
    for (let i = 0; i <= 200; i++) ring.record(snapshotWith([["web", 1, i, i]]), T0 + i * 920);
    const [h] = ring.history(T0 + 200 * 920);
    assert.ok(h.samples.length <= ring.capacity);
    assert.ok(h.samples[0].t <= T0 + 200 * 920 - 59_000, "the oldest sample is about a window old");
  });

  test("targets gone from the snapshot lose their history; new ones start fresh", () => {
    const ring = new TargetHistoryRing();
    ring.record(
      snapshotWith([
        ["web", 1, 0, 0],
        ["web", 2, 0, 0],
      ]),
      T0,
    );
    ring.record(
      snapshotWith([
        ["web", 1, 10, 10],
        ["web", 2, 10, 10],
      ]),
      T0 + 1000,
    );
    ring.record(
      snapshotWith([
        ["web", 2, 20, 20],
        ["api", 1, 5, 5],
      ]),
      T0 + 2000,
    );
    const h = ring.history(T0 + 2000);
    assert.deepEqual(
      h.map((x) => [x.service, x.fwmark, x.samples.length]),
      [
        ["web", 2, 2],
        ["api", 1, 0],
      ],
    );
    assert.equal(ring.size, 2);
  });

  test("memory is bounded: past maxTargets, targets are counted as untracked", () => {
    const ring = new TargetHistoryRing({ maxTargets: 3 });
    const many = Array.from(
      { length: 5 },
      (_, i) => ["web", i + 1, 0, 0] as [string, number, number, number],
    );
    ring.record(snapshotWith(many), T0);
    assert.equal(ring.size, 3);
    assert.equal(ring.untracked, 2);
    const samples = ring.record(snapshotWith(many), T0 + 1000);
    assert.deepEqual(
      samples.map((s) => s.fwmark),
      [1, 2, 3],
    );
  });

  test("rejects a nonsensical window", () => {
    assert.throws(() => new TargetHistoryRing({ stepMs: 0 }), RangeError);
  });
});
