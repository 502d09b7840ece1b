// A last line of defence before the checker takes a configuration: the config file's
// schema already rejects bad values with file:line:col, but the checker is an API too and
// must refuse a spec it cannot run rather than fail later, one probe at a time.
import {
  familyOf,
  isFwmark,
  isLbName,
  LB_NAME_RULE,
  MAX_FWMARK,
  MAX_PORT,
  parseAddress,
} from "../domain/index.js";
import type { HealthCheckSpec, HealthServiceSpec } from "./spec.js";

export class HealthConfigError extends Error {
  override name = "HealthConfigError";
}

function fail(where: string, what: string): never {
  throw new HealthConfigError(`health: ${where}: ${what}`);
}

function positive(where: string, name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) fail(where, `${name} must be a positive number`);
}

function count(where: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) fail(where, `${name} must be an integer >= 1`);
}

function port(where: string, value: number): void {
  if (!Number.isInteger(value) || value < 1 || value > MAX_PORT) {
    fail(where, `port ${value} is not in 1..${MAX_PORT}`);
  }
}

function regex(where: string, name: string, source: string | undefined): void {
  if (source === undefined) return;
  try {
    new RegExp(source);
  } catch (err) {
    fail(where, `${name} is not a valid regular expression: ${(err as Error).message}`);
  }
}

/** The port a check probes: its own, else the service's; undefined for exec without one. */
export function checkPort(spec: HealthCheckSpec, servicePort?: number): number | undefined {
  return spec.kind === "exec" ? servicePort : (spec.port ?? servicePort);
}

function validateCheck(where: string, spec: HealthCheckSpec, address: string, svcPort?: number) {
  positive(where, "intervalMs", spec.intervalMs);
  positive(where, "fastIntervalMs", spec.fastIntervalMs);
  positive(where, "timeoutMs", spec.timeoutMs);
  count(where, "rise", spec.rise);
  count(where, "fall", spec.fall);
  if (!(spec.jitter >= 0 && spec.jitter <= 0.5)) fail(where, "jitter must be in 0..0.5");
  if (spec.source !== undefined) {
    const source = parseAddress(spec.source);
    if (!source) fail(where, `source "${spec.source}" is not an IP address`);
    const target = parseAddress(address);
    if (target && familyOf(source) !== familyOf(target)) {
      fail(where, `source ${spec.source} and target ${address} are not of the same IP version`);
    }
  }
  if (spec.kind !== "exec") {
    const p = checkPort(spec, svcPort);
    if (p === undefined) fail(where, `a ${spec.kind} check needs a port (the service has none)`);
    port(where, p);
  }
  switch (spec.kind) {
    case "tcp":
      return;
    case "http":
    case "https":
      if (!/^[A-Z]+$/.test(spec.method)) fail(where, `method "${spec.method}" is not a method`);
      if (!spec.path.startsWith("/")) fail(where, `path "${spec.path}" must start with "/"`);
      if (spec.expectStatus.length === 0) fail(where, "expectStatus needs at least one range");
      for (const [lo, hi] of spec.expectStatus) {
        if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 100 || hi > 599 || lo > hi) {
          fail(where, `status range ${lo}-${hi} is not within 100..599`);
        }
      }
      regex(where, "expectBody", spec.expectBody);
      return;
    case "udp":
      regex(where, "expect", spec.expect);
      return;
    case "exec":
      if (spec.command.length === 0 || spec.command[0] === "") fail(where, "command is empty");
      return;
    default:
      fail(where, `unknown check kind "${(spec as { kind: string }).kind}"`);
  }
}

/** Throws HealthConfigError on the first problem found; returns nothing otherwise. */
export function validateServices(services: readonly HealthServiceSpec[]): void {
  const names = new Set<string>();
  for (const svc of services) {
    if (!isLbName(svc.name))
      fail(`service ${JSON.stringify(svc.name)}`, `the name must be ${LB_NAME_RULE}`);
    if (names.has(svc.name)) fail(`service "${svc.name}"`, "named twice");
    names.add(svc.name);
    const where = `service "${svc.name}"`;
    if (svc.port !== undefined) port(where, svc.port);
    if (!Number.isFinite(svc.warmupMs) || svc.warmupMs < 0) {
      fail(where, "warmupMs must be a number >= 0");
    }
    const fwmarks = new Set<number>();
    for (const t of svc.targets) {
      const at = `${where} target ${t.fwmark}`;
      if (!isFwmark(t.fwmark)) fail(at, `fwmark must be an integer 1..${MAX_FWMARK}`);
      if (fwmarks.has(t.fwmark)) fail(at, "fwmark listed twice");
      fwmarks.add(t.fwmark);
      if (!parseAddress(t.address)) fail(at, `address "${t.address}" is not an IP address`);
      const spec = t.check === undefined ? svc.check : t.check;
      if (spec) validateCheck(at, spec, t.address, svc.port);
    }
  }
}
