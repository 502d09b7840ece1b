// The log lines of the health checks: one line per event, no line breaks, grep-able
// ("health: SERVICE target FWMARK (ADDRESS) FROM -> TO ...").
import type { TargetRef, TargetTransition, WarmupEnded } from "./engine.js";

export function targetName(t: Pick<TargetRef, "service" | "fwmark" | "address">): string {
  return `${t.service} target ${t.fwmark} (${t.address})`;
}

/** e.g. "health: web target 2 (10.100.0.22) up -> down after 3 failures: connection refused" */
export function transitionLine(e: TargetTransition): string {
  return `health: ${targetName(e.target)} ${e.from} -> ${e.to} ${e.why}: ${e.result.reason}`;
}

export function warmupLine(e: WarmupEnded): string {
  const took = Math.round(e.at - e.startedAt);
  const counts = `${e.up} up, ${e.down} down`;
  if (e.how === "verdicts") return `health: ${e.service} warm-up done after ${took} ms: ${counts}`;
  const unknown = e.unknown.join(", ");
  return `health: ${e.service} warm-up timed out after ${took} ms: ${counts}, ${e.unknown.length} unknown (${e.unknown.length === 1 ? "target" : "targets"} ${unknown})`;
}
