// The health checker end to end: it runs in the load balancer's namespace against real
// servers in three target namespaces, with every check kind at once. Faults: a killed
// server (refused), a blackholed target (timeouts), HTTP 500, a wrong body, a flapping
// target; then repairs. Detection and recovery times are measured and asserted against
// interval x fall + timeout and interval x rise, with a stated margin.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { ServiceSnapshot, TargetSnapshot } from "../../src/health/engine.js";
import {
  blackhole,
  CheckServer,
  HealthRunner,
  PORTS,
  type RunnerEvent,
  selfSignedCert,
  unblackhole,
} from "../helpers/healthlab.js";
import { isRoot } from "../helpers/netns.js";
import { type LbTopology, lbTopology } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

const T = { intervalMs: 1000, fastIntervalMs: 500, timeoutMs: 400, rise: 2, fall: 3, jitter: 0.1 };
/** Scheduling slack on a shared 2-vCPU machine, on top of the bounds. */
const MARGIN_MS = 500;
const DOWN_WITHIN = T.intervalMs * T.fall + T.timeoutMs + MARGIN_MS;
const UP_WITHIN = T.intervalMs * T.rise + MARGIN_MS;
/** fall (rise) is honoured: its fast-interval spaced results cannot come sooner. */
const DOWN_NOT_BEFORE = (T.fall - 1) * T.fastIntervalMs * (1 - T.jitter) - 50;
const UP_NOT_BEFORE = (T.rise - 1) * T.fastIntervalMs * (1 - T.jitter) - 50;

const httpCheck = {
  kind: "http",
  port: PORTS.http,
  method: "GET",
  path: "/",
  expectStatus: [[200, 399]],
  verify: false,
  expectBody: "^ok ",
  ...T,
};

/** Every check kind, each a service over the three targets. */
const CHECKS: Record<string, Record<string, unknown>> = {
  tcp: { kind: "tcp", ...T },
  tcp6: { kind: "tcp", ...T },
  web: httpCheck,
  tls: { ...httpCheck, kind: "https", port: PORTS.https, sni: "health.test" },
  dns: { kind: "udp", port: PORTS.udp, send: "ping", expect: "^pong t\\d$", ...T },
  exec: {
    kind: "exec",
    command: ["bash", "-c", 'exec 3<>"/dev/tcp/$NFLB_ADDRESS/$NFLB_PORT"'],
    ...T,
  },
  src: { ...httpCheck, source: "10.100.0.9", expectBody: "peer=10\\.100\\.0\\.9 " },
};

function services(t: LbTopology) {
  return Object.entries(CHECKS).map(([name, check]) => ({
    name,
    port: PORTS.tcp,
    check,
    warmupMs: 5000,
    targets: t.targetAddrs.map((a, i) => ({
      fwmark: i + 1,
      address: name === "tcp6" ? a.v6 : a.v4,
    })),
  }));
}

interface Timed {
  key: string;
  ms: number;
  reason: string;
}

describe("health checker end to end", { skip }, () => {
  let t: LbTopology;
  let runner: HealthRunner;
  let cert: ReturnType<typeof selfSignedCert>;
  const servers: CheckServer[] = [];
  const figures: string[] = [];

  before(async () => {
    t = lbTopology();
    cert = selfSignedCert();
    t.lb.exec("ip", ["addr", "add", "10.100.0.9/24", "dev", "eth0"]);
    for (const [i, ns] of t.targets.entries()) {
      const s = new CheckServer(ns, `t${i + 1}`, cert);
      await s.start();
      servers.push(s);
    }
    runner = await HealthRunner.start(t.lb);
  });

  after(async () => {
    if (figures.length > 0) console.log(figures.join("\n"));
    await runner?.close();
    for (const s of servers) s.stop();
    t?.topo.destroy();
    cert?.cleanup();
  });

  const keyOf = (e: RunnerEvent) => {
    const target = e.target as { service: string; fwmark: number };
    return `${target.service}/${target.fwmark}`;
  };

  /** Waits for a transition to `to` of each key, after event index `from`, timed from `since`. */
  async function timeTransitions(
    keys: string[],
    to: string,
    since: Map<string, number>,
    from: number,
    within: number,
  ): Promise<Timed[]> {
    return Promise.all(
      keys.map(async (key) => {
        const e = await runner.waitFor(
          (ev) => ev.event === "transition" && keyOf(ev) === key && ev.to === to,
          within + 3000,
          from,
        );
        const fault = since.get(key.split("/")[1]) ?? 0;
        return { key, ms: e.wall - fault, reason: (e.result as { reason: string }).reason };
      }),
    );
  }

  /** Waits until each key is up and not changing (its last results agree). */
  async function settled(keys: string[], within: number): Promise<void> {
    const end = Date.now() + within;
    for (;;) {
      const snap = await runner.request<ServiceSnapshot[]>("snapshot");
      const ok = keys.every((key) => {
        const [service, fwmark] = key.split("/");
        const target = snap
          .find((x) => x.name === service)
          ?.targets.find((x) => x.fwmark === Number(fwmark));
        return target?.health === "up" && !target.changing;
      });
      if (ok) return;
      if (Date.now() > end) throw new Error(`${keys.join(", ")} did not settle up`);
      await sleep(100);
    }
  }

  function summary(what: string, times: Timed[]): string {
    const ms = times.map((x) => x.ms).sort((a, b) => a - b);
    const median = ms[Math.floor(ms.length / 2)];
    return `${what}: n=${ms.length} min ${ms[0]} median ${median} max ${ms.at(-1)} ms`;
  }

  test("warm-up: each service publishes all three targets in one update once all have a verdict", async () => {
    const start = Date.now();
    await runner.request("configure", { services: services(t) });
    await runner.request("start");
    const publishes = await Promise.all(
      Object.keys(CHECKS).map((name) =>
        runner.waitFor((e) => e.event === "publish" && e.service === name, 5000),
      ),
    );
    for (const p of publishes) {
      assert.deepEqual(
        p.changes,
        [1, 2, 3].map((fwmark) => ({ fwmark, health: "up" })),
        `${p.service} publishes every target, all up`,
      );
    }
    const warm = Math.max(...publishes.map((p) => p.wall - start));
    figures.push(`warm-up (7 services x 3 targets, all verdicts): ${warm} ms`);
    assert.ok(
      warm < T.fastIntervalMs * T.jitter + T.timeoutMs + MARGIN_MS,
      `warm-up took ${warm} ms`,
    );
    const warmups = runner.events.filter((e) => e.event === "warmup");
    assert.equal(warmups.length, 7);
    assert.ok(warmups.every((w) => w.how === "verdicts"));
  });

  test("killed server, blackhole, HTTP 500: each target leaves within interval x fall + timeout", async () => {
    const from = runner.events.length;
    const since = new Map<string, number>();
    await servers[0].kill();
    since.set("1", Date.now());
    blackhole(t.targets[1]);
    since.set("2", Date.now());
    await servers[2].control("status 500");
    since.set("3", Date.now());
    const all = Object.keys(CHECKS);
    const keys = [
      ...all.map((s) => `${s}/1`),
      ...all.map((s) => `${s}/2`),
      ...["web", "tls", "src"].map((s) => `${s}/3`),
    ];
    const times = await timeTransitions(keys, "down", since, from, DOWN_WITHIN);
    const reason = (key: string) => times.find((x) => x.key === key)?.reason;
    assert.equal(reason("tcp/1"), "connection refused");
    assert.equal(reason("dns/1"), "port unreachable");
    assert.match(reason("exec/1") ?? "", /^exit 1: .*Connection refused/);
    for (const s of all) assert.equal(reason(`${s}/2`), "timeout", `${s}/2`);
    for (const s of ["web", "tls", "src"]) assert.equal(reason(`${s}/3`), "status 500");
    for (const x of times) {
      assert.ok(x.ms <= DOWN_WITHIN, `${x.key} down after ${x.ms} ms > ${DOWN_WITHIN}`);
      assert.ok(x.ms >= DOWN_NOT_BEFORE, `${x.key} down after only ${x.ms} ms`);
    }
    // Checks that HTTP 500 does not concern stay up.
    await sleep(T.intervalMs);
    const t3 = runner
      .transitions(from)
      .filter((e) => keyOf(e).endsWith("/3"))
      .map(keyOf);
    assert.deepEqual(t3.sort(), ["src/3", "tls/3", "web/3"]);
    figures.push(
      summary(
        "down, killed server (refused / port unreachable / exit 1)",
        times.filter((x) => x.key.endsWith("/1")),
      ),
    );
    figures.push(
      summary(
        "down, blackhole (timeout)",
        times.filter((x) => x.key.endsWith("/2")),
      ),
    );
    figures.push(
      summary(
        "down, HTTP 500",
        times.filter((x) => x.key.endsWith("/3")),
      ),
    );
    figures.push(`  bound asserted: interval x fall + timeout + margin = ${DOWN_WITHIN} ms`);
  });

  test("repairs: each target returns within interval x rise", async () => {
    const from = runner.events.length;
    const since = new Map<string, number>();
    await servers[0].start();
    since.set("1", Date.now());
    unblackhole(t.targets[1]);
    since.set("2", Date.now());
    await servers[2].control("status 200");
    since.set("3", Date.now());
    const all = Object.keys(CHECKS);
    const keys = [
      ...all.map((s) => `${s}/1`),
      ...all.map((s) => `${s}/2`),
      ...["web", "tls", "src"].map((s) => `${s}/3`),
    ];
    const times = await timeTransitions(keys, "up", since, from, UP_WITHIN);
    for (const x of times) {
      assert.ok(x.ms <= UP_WITHIN, `${x.key} up after ${x.ms} ms > ${UP_WITHIN}`);
      assert.ok(x.ms >= UP_NOT_BEFORE, `${x.key} up after only ${x.ms} ms`);
    }
    figures.push(
      summary(
        "up, server restarted",
        times.filter((x) => x.key.endsWith("/1")),
      ),
    );
    figures.push(
      summary(
        "up, blackhole removed",
        times.filter((x) => x.key.endsWith("/2")),
      ),
    );
    figures.push(
      summary(
        "up, HTTP 200 again",
        times.filter((x) => x.key.endsWith("/3")),
      ),
    );
    figures.push(`  bound asserted: interval x rise + margin = ${UP_WITHIN} ms`);
  });

  test("a wrong body takes the http checks down with 'body mismatch' and back", async () => {
    const from = runner.events.length;
    await servers[2].control("body sick");
    const since = new Map([["3", Date.now()]]);
    const down = await timeTransitions(["web/3", "tls/3"], "down", since, from, DOWN_WITHIN);
    assert.ok(down.every((x) => x.reason === "body mismatch" && x.ms <= DOWN_WITHIN));
    const back = runner.events.length;
    await servers[2].control("body ok");
    since.set("3", Date.now());
    const up = await timeTransitions(["web/3", "tls/3"], "up", since, back, UP_WITHIN);
    assert.ok(up.every((x) => x.ms <= UP_WITHIN));
    // src/3 only looks at the peer address: it never noticed.
    assert.ok(!runner.transitions(from).some((e) => keyOf(e) === "src/3"));
  });

  test("a flapping target changes no more often than rise/fall allows", async () => {
    const from = runner.events.length;
    const end = Date.now() + 8000;
    let status = 500;
    // Bad and good spells of 0.25 to 2.5 s: some long enough to count, most not.
    while (Date.now() < end) {
      await servers[2].control(`status ${status}`);
      status = status === 500 ? 200 : 500;
      await sleep(250 + Math.random() * 2250);
    }
    await servers[2].control("status 200");
    const window = runner.events.slice(from);
    const checks = window.filter((e) => e.event === "check" && keyOf(e) === "web/3").length;
    const flips = window.filter((e) => e.event === "transition" && keyOf(e) === "web/3").length;
    const bound = 2 * Math.floor(checks / (T.rise + T.fall)) + 1;
    figures.push(
      `flapping: web/3 had ${checks} checks and ${flips} transitions in 8 s (bound ${bound})`,
    );
    assert.ok(checks >= 8, `${checks} checks`);
    assert.ok(flips <= bound, `${flips} transitions for ${checks} checks`);
    await settled(["web/3", "tls/3", "src/3"], UP_WITHIN + 2000);
  });

  test("every transition is logged once, as one line", () => {
    const transitions = runner.transitions();
    const lines = runner.events
      .filter((e) => e.event === "log" && String(e.line).includes(" -> "))
      .map((e) => String(e.line));
    assert.equal(lines.length, transitions.length);
    assert.ok(
      lines.includes("health: web target 3 (10.100.0.23) up -> down after 3 failures: status 500"),
    );
    assert.ok(
      lines.includes(
        "health: dns target 1 (10.100.0.21) up -> down after 3 failures: port unreachable",
      ),
    );
    assert.ok(lines.every((l) => !l.includes("\n")));
  });

  test("a reload keeps unchanged targets, drops a removed one and checks a new one", async () => {
    const snapBefore = await runner.request<ServiceSnapshot[]>("snapshot");
    const web = snapBefore.find((s) => s.name === "web");
    assert.ok(web);
    const from = runner.events.length;
    const next = services(t).map((s) =>
      s.name === "web"
        ? { ...s, targets: [...s.targets.slice(0, 2), { fwmark: 4, address: t.targetAddrs[2].v4 }] }
        : s,
    );
    const result = await runner.request<{
      added: unknown[];
      removed: unknown[];
      unchanged: number;
    }>("configure", { services: next });
    assert.equal(result.added.length, 1);
    assert.equal(result.removed.length, 1);
    assert.equal(result.unchanged, 20);
    await runner.waitFor((e) => e.event === "transition" && keyOf(e) === "web/4", 3000, from);
    await runner.waitFor((e) => e.event === "publish" && e.service === "web", 1000, from);
    const snapAfter = await runner.request<ServiceSnapshot[]>("snapshot");
    const webAfter = snapAfter.find((s) => s.name === "web");
    assert.deepEqual(
      webAfter?.targets.map((x) => x.fwmark),
      [1, 2, 4],
    );
    for (const f of [1, 2]) {
      const was: TargetSnapshot | undefined = web.targets.find((x) => x.fwmark === f);
      const is: TargetSnapshot | undefined = webAfter?.targets.find((x) => x.fwmark === f);
      assert.equal(is?.since, was?.since, `web/${f} kept its health since`);
      assert.ok((is?.checks ?? 0) >= (was?.checks ?? 0), `web/${f} kept its counters`);
    }
    const newLines = runner.transitions(from).map((e) => `${keyOf(e)} ${e.from}->${e.to}`);
    assert.deepEqual(newLines, ["web/4 unknown->up"]);
    const published = runner.events.slice(from).filter((e) => e.event === "publish");
    assert.deepEqual(
      published.map((p) => p.changes),
      [[{ fwmark: 4, health: "up" }]],
    );
  });

  test("stop returns promptly with probes to a blackholed target in flight", async () => {
    blackhole(t.targets[1]);
    try {
      const r = await runner.request<{ inFlight: number; tookMs: number }>("stop", {
        whenProbing: 2,
      });
      figures.push(`stop with ${r.inFlight} probe(s) in flight: ${r.tookMs.toFixed(1)} ms`);
      assert.ok(r.inFlight >= 1);
      assert.ok(r.tookMs < 100, `stop took ${r.tookMs} ms`);
    } finally {
      unblackhole(t.targets[1]);
    }
  });
});
