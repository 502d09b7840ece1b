// Health checks: what `nflb run` (and status, metrics, the dashboard) use.
export {
  HealthChecker,
  type HealthCheckerOptions,
  type HealthHooks,
  type HealthLog,
  monotonicNow,
} from "./checker.js";
export type {
  HealthUpdate,
  ProbeRequest,
  ProbeTicket,
  ReconfigureSummary,
  ServiceSnapshot,
  TargetRef,
  TargetSnapshot,
  TargetTransition,
  WarmupEnded,
} from "./engine.js";
export { HealthEngine } from "./engine.js";
export { targetName, transitionLine, warmupLine } from "./format.js";
export {
  type CheckResult,
  detectionBoundMs,
  recoveryBoundMs,
  type TargetState,
  type Transition,
} from "./machine.js";
export {
  execEnvironment,
  type ProbeOutcome,
  type Prober,
  type ProbeTarget,
  runProbe,
} from "./probe/index.js";
export { type HealthSink, MemorySink, type TargetHealthChange } from "./sink.js";
export * from "./spec.js";
export {
  MissingTargetsError,
  recordHealth,
  StateHealthSink,
  type StateHealthSinkOptions,
} from "./state-sink.js";
export { type TargetHealthStatus, targetHealthStatus, transitionEvent } from "./status.js";
export { HealthConfigError, validateServices } from "./validate.js";
