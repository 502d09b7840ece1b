// Probes that need no network: the deadline frame every probe runs in, error reasons, and
// the exec check (processes are local). Socket probes are tested in namespaces
// (test/e2e/health-probes.test.ts).
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { attempt, describeError } from "../../src/health/probe/attempt.js";
import { runProbe } from "../../src/health/probe/index.js";
import type { ExecCheck } from "../../src/health/spec.js";

const dir = mkdtempSync(join(tmpdir(), "nflb-health-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const target = { service: "web", fwmark: 2, address: "10.100.0.22", port: 8080 };

function exec(command: string[], timeoutMs = 2000): ExecCheck {
  return {
    kind: "exec",
    command,
    intervalMs: 5000,
    fastIntervalMs: 1000,
    timeoutMs,
    rise: 2,
    fall: 3,
    jitter: 0,
  };
}

describe("probe frame", () => {
  test("the first verdict wins, cleanups run once, a throw is a failure", async () => {
    let cleaned = 0;
    const r = await attempt(1000, undefined, (finish, onDone) => {
      onDone(() => cleaned++);
      finish(true, "first");
      finish(false, "second");
    });
    assert.deepEqual([r.ok, r.reason, cleaned], [true, "first", 1]);
    const t = await attempt(1000, undefined, () => {
      throw Object.assign(new Error("x"), { code: "ECONNREFUSED" });
    });
    assert.deepEqual([t.ok, t.reason], [false, "connection refused"]);
  });

  test("the timeout ends a probe that never answers, and cleans up", async () => {
    let cleaned = false;
    const r = await attempt(60, undefined, (_finish, onDone) => onDone(() => (cleaned = true)));
    assert.deepEqual([r.ok, r.reason, cleaned], [false, "timeout", true]);
    assert.ok(r.latencyMs >= 55 && r.latencyMs < 500, `latency ${r.latencyMs}`);
  });

  test("an abort cancels at once", async () => {
    const c = new AbortController();
    const p = attempt(10_000, c.signal, () => {});
    c.abort();
    const r = await p;
    assert.deepEqual([r.ok, r.reason], [false, "cancelled"]);
    assert.ok(r.latencyMs < 100);
    const already = await attempt(10_000, c.signal, () => assert.fail("must not run"));
    assert.equal(already.reason, "cancelled");
  });

  test("error reasons are short", () => {
    const e = (code: string) => Object.assign(new Error("long message"), { code });
    assert.equal(describeError(e("ECONNREFUSED")), "connection refused");
    assert.equal(describeError(e("EHOSTUNREACH")), "host unreachable");
    assert.equal(
      describeError(e("DEPTH_ZERO_SELF_SIGNED_CERT")),
      "tls: DEPTH_ZERO_SELF_SIGNED_CERT",
    );
    assert.equal(describeError(e("HPE_INVALID_CONSTANT")), "bad http response");
    assert.equal(describeError(new Error("x".repeat(200))).length, 80);
  });
});

describe("exec probe", () => {
  test("exit 0 is up", async () => {
    const r = await runProbe(target, exec(["true"]));
    assert.deepEqual([r.ok, r.reason], [true, "exit 0"]);
  });

  test("another exit status is down, with the first line of its output", async () => {
    const r = await runProbe(target, exec(["sh", "-c", "echo; echo 'not ready yet' >&2; exit 3"]));
    assert.deepEqual([r.ok, r.reason], [false, "exit 3: not ready yet"]);
  });

  test("the command runs without a shell and its environment names the target", async () => {
    const out = join(dir, "env");
    const r = await runProbe(target, {
      ...exec([
        "sh",
        "-c",
        'echo "$NFLB_SERVICE $NFLB_FWMARK $NFLB_ADDRESS $NFLB_PORT $NFLB_TIMEOUT_MS $1" > "$0"',
        out,
        "a b;$(reboot)",
      ]),
      source: "10.100.0.1",
    });
    assert.equal(r.ok, true);
    assert.equal(readFileSync(out, "utf8"), "web 2 10.100.0.22 8080 2000 a b;$(reboot)\n");
  });

  test("killed at the timeout, with the children it started", async () => {
    const pidFile = join(dir, "pid");
    const r = await runProbe(
      target,
      exec(["sh", "-c", `sleep 30 & echo $! > ${pidFile}; wait`], 300),
    );
    assert.deepEqual([r.ok, r.reason], [false, "timeout"]);
    assert.ok(r.latencyMs >= 290 && r.latencyMs < 1000, `latency ${r.latencyMs}`);
    const pid = readFileSync(pidFile, "utf8").trim();
    await sleep(100);
    const state = existsSync(`/proc/${pid}/stat`)
      ? readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2]
      : "gone";
    assert.ok(state === "gone" || state === "Z", `the background sleep is ${state}`);
  });

  test("a missing command is a failure, not an exception", async () => {
    const r = await runProbe(target, exec(["/nonexistent/check"]));
    assert.deepEqual([r.ok, r.reason], [false, "cannot run /nonexistent/check: ENOENT"]);
  });

  test("a cancelled exec check kills its process", async () => {
    const c = new AbortController();
    const pidFile = join(dir, "pid2");
    const p = runProbe(target, exec(["sh", "-c", `echo $$ > ${pidFile}; exec sleep 30`]), c.signal);
    await sleep(200);
    c.abort();
    const r = await p;
    assert.equal(r.reason, "cancelled");
    const pid = readFileSync(pidFile, "utf8").trim();
    await sleep(100);
    assert.ok(
      !existsSync(`/proc/${pid}/stat`) ||
        readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2] === "Z",
    );
  });
});
