// Runs a HealthChecker (or single probes) inside a network namespace for the end-to-end
// tests: started with `ip netns exec NS node health-runner.js`, it takes one JSON request
// per stdin line and writes JSON lines: replies ({id, ok, result|error}) and events
// ({event, wall, ...}) stamped with the wall clock, so the test can time them.
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { HealthChecker } from "../../src/health/checker.js";
import { runProbe } from "../../src/health/probe/index.js";
import type { HealthCheckSpec, HealthServiceSpec } from "../../src/health/spec.js";

type Json = Record<string, unknown>;

function out(o: Json): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function event(name: string, body: Json): void {
  out({ event: name, wall: Date.now(), ...body });
}

/** JSON has no bytes: a udp check's `send` comes as text. */
function revive(spec: HealthCheckSpec | null | undefined): HealthCheckSpec | null | undefined {
  if (spec?.kind === "udp" && typeof spec.send === "string") {
    return { ...spec, send: new Uint8Array(Buffer.from(spec.send as unknown as string)) };
  }
  return spec;
}

function reviveServices(services: HealthServiceSpec[]): HealthServiceSpec[] {
  return services.map((s) => ({
    ...s,
    check: revive(s.check) ?? undefined,
    targets: s.targets.map((t) => ({ ...t, check: revive(t.check) })),
  }));
}

const checker = new HealthChecker({
  sink: { publish: (service, changes) => event("publish", { service, changes }) },
  log: {
    notice: (line) => event("log", { level: "notice", line }),
    warning: (line) => event("log", { level: "warning", line }),
    info: (line) => event("log", { level: "info", line }),
  },
  hooks: {
    onCheck: (target, result) => event("check", { target, result }),
    onTransition: (e) => event("transition", { ...e }),
    onWarmupEnded: (e) => event("warmup", { ...e }),
  },
});

async function handle(req: Json): Promise<unknown> {
  switch (req.op) {
    case "configure":
      return checker.configure(reviveServices(req.services as HealthServiceSpec[]));
    case "start":
      return checker.start();
    case "stop": {
      // whenProbing: FWMARK: wait (up to 5 s) until a probe of that target is in flight, to
      // stop in the middle of one.
      const deadline = Date.now() + 5000;
      const probing = () =>
        checker
          .snapshot()
          .reduce(
            (n, s) => n + s.targets.filter((t) => t.probing && t.fwmark === req.whenProbing).length,
            0,
          );
      while (req.whenProbing !== undefined && probing() === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 1));
      }
      const inFlight = probing();
      const started = performance.now();
      await checker.stop();
      return { inFlight, tookMs: performance.now() - started };
    }
    case "snapshot":
      return checker.snapshot();
    case "probe":
      return runProbe(
        req.target as Parameters<typeof runProbe>[0],
        revive(req.spec as HealthCheckSpec) as HealthCheckSpec,
      );
    default:
      throw new Error(`unknown op ${String(req.op)}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const req = JSON.parse(line) as Json;
  handle(req).then(
    (result) => out({ id: req.id, ok: true, result: result ?? null }),
    (err) => out({ id: req.id, ok: false, error: String((err as Error)?.message ?? err) }),
  );
});
lines.on("close", () => {
  void checker.stop().then(() => process.exit(0));
});
out({ event: "ready", wall: Date.now() });
