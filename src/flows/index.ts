// Public surface of the flows module: flow definitions (parse, validate, normalise) and
// the compiled matcher. Pure: no I/O, no clock.
export * from "./matcher.js";
export * from "./spec.js";
