// The checker driver on real timers with a scripted prober: warm-up publishing, transition
// log lines, sink retries, hooks, cancellation on stop and on reload.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { HealthChecker, type HealthLog } from "../../src/health/checker.js";
import type { TargetRef, TargetSnapshot, TargetTransition } from "../../src/health/engine.js";
import type { CheckResult } from "../../src/health/machine.js";
import type { ProbeOutcome, Prober } from "../../src/health/probe/index.js";
import { type HealthSink, MemorySink } from "../../src/health/sink.js";
import type { HealthServiceSpec, TcpCheck } from "../../src/health/spec.js";
import { targetHealthStatus } from "../../src/health/status.js";

const check: TcpCheck = {
  kind: "tcp",
  intervalMs: 20,
  fastIntervalMs: 10,
  timeoutMs: 50,
  rise: 2,
  fall: 2,
  jitter: 0,
};

function web(fwmarks = [1, 2, 3]): HealthServiceSpec {
  return {
    name: "web",
    port: 80,
    check,
    warmupMs: 5000,
    targets: fwmarks.map((f) => ({ fwmark: f, address: `10.0.0.${f}` })),
  };
}

class Lines implements HealthLog {
  readonly lines: string[] = [];
  notice(m: string) {
    this.lines.push(`notice ${m}`);
  }
  warning(m: string) {
    this.lines.push(`warning ${m}`);
  }
  info(m: string) {
    this.lines.push(`info ${m}`);
  }
}

/** Answers each probe from `answers` (fwmark -> outcome), after `delayMs`. */
function scripted(answers: Map<number, Omit<ProbeOutcome, "latencyMs">>, delayMs = 1): Prober {
  return async (t) => {
    await sleep(delayMs);
    return { ...(answers.get(t.fwmark) ?? { ok: true, reason: "connected" }), latencyMs: delayMs };
  };
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe("health checker (driver)", () => {
  test("publishes the warm-up in one call, then each transition, logging each once", async () => {
    const answers = new Map<number, Omit<ProbeOutcome, "latencyMs">>();
    const sink = new MemorySink();
    const log = new Lines();
    const checks: { target: TargetRef; result: CheckResult }[] = [];
    const transitions: TargetTransition[] = [];
    const checker = new HealthChecker({
      sink,
      log,
      prober: scripted(answers),
      hooks: {
        onCheck: (target, result) => checks.push({ target, result }),
        onTransition: (e) => transitions.push(e),
      },
    });
    checker.configure([web()]);
    checker.start();
    try {
      await until("warm-up", () => sink.calls.length === 1);
      assert.deepEqual(sink.calls[0], {
        service: "web",
        changes: [
          { fwmark: 1, health: "up" },
          { fwmark: 2, health: "up" },
          { fwmark: 3, health: "up" },
        ],
      });
      assert.equal(checker.isReady(), true);
      answers.set(2, { ok: false, reason: "connection refused" });
      await until("target 2 down", () => sink.calls.length === 2);
      assert.deepEqual(sink.calls[1], { service: "web", changes: [{ fwmark: 2, health: "down" }] });
      answers.delete(2);
      await until("target 2 up", () => sink.calls.length === 3);
      assert.deepEqual(sink.calls[2].changes, [{ fwmark: 2, health: "up" }]);
    } finally {
      await checker.stop();
    }
    const t2 = log.lines.filter((l) => l.includes("web target 2 "));
    assert.deepEqual(t2, [
      "notice health: web target 2 (10.0.0.2) unknown -> up on first check: connected",
      "notice health: web target 2 (10.0.0.2) up -> down after 2 failures: connection refused",
      "notice health: web target 2 (10.0.0.2) down -> up after 2 successes: connected",
    ]);
    assert.ok(
      log.lines.some((l) => /^notice health: web warm-up done after \d+ ms: 3 up, 0 down$/.test(l)),
    );
    assert.equal(transitions.length, 5, "3 first verdicts, 1 down, 1 up: one hook call each");
    assert.ok(checks.length >= 10);
    assert.ok(checks.every((c) => c.result.latencyMs === 1 && c.result.at > 0));
    const snap = checker.snapshot()[0].targets.find((t) => t.fwmark === 2);
    assert.equal(snap?.health, "up");
    assert.equal(snap?.downs, 1);
    assert.equal(snap?.ups, 2);
    assert.equal(snap?.lastResult?.reason, "connected");
  });

  test("a failing sink is retried, warned about once, and catches up with the latest health", async () => {
    let failures = 3;
    const seen: string[] = [];
    const sink: HealthSink = {
      publish(service, changes) {
        if (failures-- > 0) throw new Error("state file locked");
        seen.push(`${service}:${changes.map((c) => `${c.fwmark}=${c.health}`).join(",")}`);
      },
    };
    const log = new Lines();
    const checker = new HealthChecker({ sink, log, prober: scripted(new Map()), retryMs: 20 });
    checker.configure([web([1, 2])]);
    checker.start();
    try {
      await until("recorded", () => seen.length === 1);
      assert.deepEqual(seen, ["web:1=up,2=up"]);
    } finally {
      await checker.stop();
    }
    const warnings = log.lines.filter((l) => l.startsWith("warning"));
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0],
      /web: cannot record the health of 2 target\(s\), retrying every 20 ms: state file locked/,
    );
    assert.ok(log.lines.includes("notice health: web: health recorded again"));
  });

  test("health pending for a target removed by a reload is dropped, not retried", async () => {
    let failing = true;
    const seen: string[] = [];
    const sink: HealthSink = {
      publish(service, changes) {
        if (failing) throw new Error("no state yet");
        seen.push(`${service}:${changes.map((c) => `${c.fwmark}=${c.health}`).join(",")}`);
      },
    };
    const checker = new HealthChecker({
      sink,
      log: new Lines(),
      prober: scripted(new Map()),
      retryMs: 20,
    });
    checker.configure([web([1, 2])]);
    checker.start();
    try {
      await until("verdicts", () => checker.isReady("web"));
      await sleep(30);
      checker.configure([web([1])]);
      failing = false;
      await until("recorded", () => seen.length === 1);
      assert.deepEqual(seen, ["web:1=up"]);
    } finally {
      await checker.stop();
    }
  });

  test("stop cancels probes in flight and resolves; start again carries on", async () => {
    const aborted: number[] = [];
    let hang = true;
    const prober: Prober = (t, _spec, signal) =>
      new Promise((resolve) => {
        if (!hang) return resolve({ ok: true, reason: "connected", latencyMs: 0 });
        signal?.addEventListener("abort", () => {
          aborted.push(t.fwmark);
          resolve({ ok: false, reason: "cancelled", latencyMs: 0 });
        });
      });
    const sink = new MemorySink();
    const checker = new HealthChecker({ sink, log: new Lines(), prober });
    checker.configure([web([1, 2])]);
    checker.start();
    await until("probes in flight", () => checker.snapshot()[0].targets.every((t) => t.probing));
    await checker.stop();
    assert.deepEqual(aborted.sort(), [1, 2]);
    assert.ok(checker.snapshot()[0].targets.every((t) => t.health === "unknown" && t.checks === 0));
    hang = false;
    checker.start();
    try {
      await until("verdicts after restart", () => sink.calls.length === 1);
    } finally {
      await checker.stop();
    }
  });

  test("a reload cancels the probe of a removed target; its late answer changes nothing", async () => {
    const aborted: number[] = [];
    const prober: Prober = (t, _spec, signal) =>
      new Promise((resolve) => {
        if (t.fwmark !== 3) return resolve({ ok: true, reason: "connected", latencyMs: 0 });
        signal?.addEventListener("abort", () => aborted.push(3));
        setTimeout(() => resolve({ ok: false, reason: "timeout", latencyMs: 50 }), 50);
      });
    const sink = new MemorySink();
    const log = new Lines();
    const checker = new HealthChecker({ sink, log, prober });
    checker.configure([web([1, 2, 3])]);
    checker.start();
    try {
      await until("3 in flight", () =>
        checker.snapshot()[0].targets.some((t) => t.fwmark === 3 && t.probing),
      );
      const summary = checker.configure([web([1, 2])]);
      assert.deepEqual(
        summary.removed.map((t) => t.fwmark),
        [3],
      );
      assert.deepEqual(aborted, [3]);
      // Removing the target the warm-up waited for ends it.
      await until("warm-up", () => sink.calls.length === 1);
      assert.deepEqual(
        sink.calls[0].changes.map((c) => c.fwmark),
        [1, 2],
      );
      await sleep(80);
    } finally {
      await checker.stop();
    }
    assert.ok(!log.lines.some((l) => l.includes("target 3")));
    assert.ok(log.lines.includes("info health: targets 1 removed, 2 unchanged"));
  });

  test("a throwing hook or a rejecting prober never stops the checker", async () => {
    const log = new Lines();
    const sink = new MemorySink();
    const prober: Prober = async (t) => {
      if (t.fwmark === 2) throw new Error("boom");
      return { ok: true, reason: "connected", latencyMs: 0 };
    };
    const checker = new HealthChecker({
      sink,
      log,
      prober,
      hooks: {
        onTransition() {
          throw new Error("hook broke");
        },
      },
    });
    checker.configure([web([1, 2])]);
    checker.start();
    try {
      await until("warm-up", () => sink.calls.length === 1);
    } finally {
      await checker.stop();
    }
    assert.deepEqual(sink.calls[0].changes, [
      { fwmark: 1, health: "up" },
      { fwmark: 2, health: "down" },
    ]);
    assert.ok(
      log.lines.includes(
        "notice health: web target 2 (10.0.0.2) unknown -> down on first check: Error: boom",
      ),
    );
    assert.ok(log.lines.some((l) => l === "warning health: a hook failed: hook broke"));
  });
});

describe("health status", () => {
  test("a target's snapshot in the words of the status contract", () => {
    const snap: TargetSnapshot = {
      service: "web",
      fwmark: 2,
      address: "10.0.0.2",
      port: 80,
      kind: "tcp",
      health: "down",
      since: Date.UTC(2026, 10, 29, 12, 0, 0),
      changing: false,
      successes: 0,
      failures: 3,
      checks: 10,
      failedChecks: 3,
      ups: 1,
      downs: 1,
      lastResult: {
        ok: false,
        latencyMs: 1.5,
        reason: "timeout",
        at: Date.UTC(2026, 10, 29, 12, 0, 0),
      },
      probing: false,
    };
    assert.deepEqual(targetHealthStatus(snap), {
      health: "down",
      healthSince: "2026-11-29T12:00:00.000Z",
      lastCheck: { ok: false, latencyMs: 1.5, reason: "timeout", at: "2026-11-29T12:00:00.000Z" },
      transitions: 2,
    });
    assert.equal(targetHealthStatus({ ...snap, lastResult: undefined }).lastCheck, undefined);
  });
});
