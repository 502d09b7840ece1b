// The I/O edge of the health checks: one probe of one target, by kind. Every probe is
// bounded by its timeout, can be cancelled, and resolves (never rejects) with a verdict.
import type { HealthCheckSpec } from "../spec.js";
import { attempt, describeError, type ProbeOutcome } from "./attempt.js";
import { probeExec } from "./exec.js";
import { probeHttp } from "./http.js";
import { probeTcp } from "./tcp.js";
import { probeUdp } from "./udp.js";

export type { ProbeOutcome } from "./attempt.js";
export { execEnvironment } from "./exec.js";

/** Where a probe goes and whom it is for (exec checks get it in their environment). */
export interface ProbeTarget {
  service: string;
  fwmark: number;
  address: string;
  port?: number;
}

export type Prober = (
  target: ProbeTarget,
  spec: HealthCheckSpec,
  signal?: AbortSignal,
) => Promise<ProbeOutcome>;

function dispatch(t: ProbeTarget, spec: HealthCheckSpec, signal?: AbortSignal) {
  if (spec.kind === "exec") return probeExec(t, spec, signal);
  if (t.port === undefined) {
    return attempt(spec.timeoutMs, signal, (finish) => finish(false, "no port to probe"));
  }
  switch (spec.kind) {
    case "tcp":
      return probeTcp(t.address, t.port, spec, signal);
    case "http":
    case "https":
      return probeHttp(t.address, t.port, spec, signal);
    case "udp":
      return probeUdp(t.address, t.port, spec, signal);
  }
}

/** Probes one target once with its check. */
export const runProbe: Prober = async (target, spec, signal) => {
  try {
    return await dispatch(target, spec, signal);
  } catch (err) {
    return { ok: false, reason: describeError(err), latencyMs: 0 };
  }
};
