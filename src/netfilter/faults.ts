// Test-only fault injection at the level of single operations. A setup or teardown is a
// sequence of operations: every run of a tool (nft, iptables-nft, ip, ...) and every write
// or removal of nflb's own files (records, builtin-chain ownership, the Maglev state). A
// fault fails or kills the process at exactly one of them, before or after it takes
// effect, so tests can sweep it over every operation and prove that rollback and recovery
// work inside steps too, not only between them.
import { type OperationFault, SetupError } from "./types.js";

let armed: { fault: OperationFault; count: number } | undefined;

const FAULT_TEXT = /^(fail|kill)-(before|after):([1-9]\d{0,5})$/;

/** "fail-after:12", "kill-before:3": the form of `NFLB_TEST_FAULT`. */
export function parseOperationFault(text: string): OperationFault {
  const m = FAULT_TEXT.exec(text.trim());
  if (!m) {
    throw new SetupError(`invalid fault "${text}": expected fail|kill-before|after:N, N >= 1`);
  }
  return {
    action: m[1] as OperationFault["action"],
    when: m[2] as OperationFault["when"],
    op: Number(m[3]),
  };
}

export function isOperationFault(value: unknown): value is OperationFault {
  return typeof value === "object" && value !== null && "op" in value;
}

/**
 * Runs `fn` with the fault armed; operations are counted from 1. A nested call with no
 * fault of its own keeps counting into the outer one (setup inside a provisioning).
 */
export function withOperationFault<T>(fault: OperationFault | undefined, fn: () => T): T {
  if (!fault || armed) return fn();
  armed = { fault, count: 0 };
  try {
    return fn();
  } finally {
    armed = undefined;
  }
}

function strike(fault: OperationFault, n: number, what: string): never {
  // A real SIGKILL: no exit handlers, no finally blocks, exactly what a crash leaves.
  if (fault.action === "kill") process.kill(process.pid, "SIGKILL");
  throw new SetupError(`injected failure ${fault.when} operation ${n} (${what})`);
}

/** Performs one operation, striking first or afterwards when the armed fault names it. */
export function operation<T>(what: string, fn: () => T): T {
  if (!armed) return fn();
  const n = ++armed.count;
  const { fault } = armed;
  if (n === fault.op && fault.when === "before") strike(fault, n, what);
  const result = fn();
  if (n === fault.op && fault.when === "after") strike(fault, n, what);
  return result;
}
