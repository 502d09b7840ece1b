// The checker refuses a specification it cannot run, with a message naming the service,
// the target and the field.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { HealthCheckSpec, HealthServiceSpec } from "../../src/health/spec.js";
import { validateServices } from "../../src/health/validate.js";

const timing = {
  intervalMs: 2000,
  fastIntervalMs: 1000,
  timeoutMs: 1000,
  rise: 2,
  fall: 3,
  jitter: 0.1,
};
const http: HealthCheckSpec = {
  kind: "http",
  method: "GET",
  path: "/",
  expectStatus: [[200, 399]],
  verify: false,
  ...timing,
};

function svc(check: Partial<HealthCheckSpec> | undefined, over: Partial<HealthServiceSpec> = {}) {
  return {
    name: "web",
    port: 80,
    warmupMs: 10_000,
    check: check ? ({ ...http, ...check } as HealthCheckSpec) : undefined,
    targets: [{ fwmark: 2, address: "10.0.0.2" }],
    ...over,
  };
}

test("valid specifications pass, unchecked services too", () => {
  validateServices([svc({}), svc(undefined, { name: "raw" })]);
  validateServices([
    svc({ kind: "exec", command: ["true"] } as Partial<HealthCheckSpec>, { port: undefined }),
  ]);
});

test("each bad field is named with its service and target", () => {
  const cases: [HealthServiceSpec[], RegExp][] = [
    [[svc({}, { name: "a.b" })], /service "a\.b": the name must be 1-20 characters/],
    [[svc({}), svc({})], /service "web": named twice/],
    [[svc({}, { targets: [{ fwmark: 0, address: "10.0.0.2" }] })], /target 0: fwmark must be/],
    [
      [svc({}, { targets: [{ fwmark: 2, address: "10.0.0" }] })],
      /target 2: address "10\.0\.0" is not/,
    ],
    [[svc({}, { port: undefined })], /target 2: a http check needs a port/],
    [[svc({ port: 70000 } as Partial<HealthCheckSpec>)], /port 70000 is not in 1\.\.65535/],
    [[svc({ timeoutMs: 0 })], /timeoutMs must be a positive number/],
    [[svc({ fall: 1.5 })], /fall must be an integer >= 1/],
    [[svc({ jitter: 0.6 })], /jitter must be in 0\.\.0\.5/],
    [
      [svc({ source: "fd00::1" })],
      /source fd00::1 and target 10\.0\.0\.2 are not of the same IP version/,
    ],
    [[svc({ source: "nowhere" })], /source "nowhere" is not an IP address/],
    [[svc({ path: "health" } as Partial<HealthCheckSpec>)], /path "health" must start with/],
    [[svc({ expectStatus: [[300, 200]] } as Partial<HealthCheckSpec>)], /status range 300-200/],
    [
      [svc({ expectBody: "(" } as Partial<HealthCheckSpec>)],
      /expectBody is not a valid regular expression/,
    ],
    [
      [svc({ kind: "udp", send: new Uint8Array(1), expect: "[" } as Partial<HealthCheckSpec>)],
      /expect is not a valid/,
    ],
    [[svc({ kind: "exec", command: [] } as Partial<HealthCheckSpec>)], /command is empty/],
    [[svc({}, { warmupMs: -1 })], /warmupMs must be a number >= 0/],
  ];
  for (const [services, message] of cases) {
    assert.throws(() => validateServices(services), message);
  }
});

test("a target's own check replaces the service's, and null leaves it unchecked", () => {
  const bad = svc(
    {},
    {
      targets: [
        { fwmark: 2, address: "10.0.0.2", check: null },
        { fwmark: 3, address: "10.0.0.3", check: { ...http, rise: 0 } },
      ],
    },
  );
  assert.throws(() => validateServices([bad]), /target 3: rise must be/);
  validateServices([{ ...bad, targets: [bad.targets[0]] }]);
});
