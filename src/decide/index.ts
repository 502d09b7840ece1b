// Public surface of the decision core: decide() and what it answers with. Pure: no I/O.
export * from "./decide.js";
export * from "./explain.js";
export * from "./question.js";
export * from "./reason.js";
export * from "./table.js";
