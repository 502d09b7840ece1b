// What every command group shares: argument parsers, error reporting, JSON output.
//
// Errors: whatever goes wrong (a usage error found by commander, a domain, state, setup
// or flow error, an unexpected exception) leaves the CLI through fail(), which prints
// exactly one line "nflb: <what is wrong>" on stderr and exits with status 1. NFLB_DEBUG
// adds the stack.
import { type Command, CommanderError, InvalidArgumentError } from "commander";
import { parseFwmark } from "../domain/fwmark.js";
import { DEFAULT_LB_NAME, parseLbName } from "../domain/names.js";
import { parseWeight, type WeightRule } from "../domain/weight.js";

/** An error the user can act on: printed as one line, exit status 1. */
export class CliError extends Error {}

/** The one line an error becomes (without the "nflb: " prefix). */
export function errorMessage(err: unknown): string {
  let message = err instanceof Error ? err.message : String(err);
  // Commander's own messages start with "error: ".
  if (err instanceof CommanderError) message = message.replace(/^error: /, "");
  const lines = message
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  return lines.join("; ") || "unknown error";
}

export function fail(err: unknown): never {
  process.stderr.write(`nflb: ${errorMessage(err)}\n`);
  if (process.env.NFLB_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

/** A warning the command goes on after: one line, "nflb: warning: ...". */
export function warn(message: string): void {
  process.stderr.write(`nflb: warning: ${message}\n`);
}

/** A note on stderr that is not a failure (e.g. "M 1000 is not prime; using 997"). */
export function note(message: string): void {
  process.stderr.write(`nflb: ${message}\n`);
}

/** Wraps a command action so any error becomes a clear message and a non-zero exit. */
export function action<A extends unknown[]>(
  fn: (...args: A) => void | Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      fail(err);
    }
  };
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** An option parser: a domain parser's error becomes commander's "argument ... is invalid". */
export function optionParser<T>(parse: (value: string) => T): (value: string) => T {
  return (value: string) => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/** An integer option in min..max; `what` names it in the message ("Maglev table size"). */
export function intArg(min: number, max: number, what?: string): (value: string) => number {
  return (value: string) => {
    const n = /^(0x[0-9a-fA-F]+|[0-9]+)$/.test(value.trim()) ? Number(value) : Number.NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `${what === undefined ? "" : `${what}: `}expected an integer ${min}..${max}`,
      );
    }
    return n;
  };
}

export const fwmarkArg = optionParser(parseFwmark);

export function weightArg(rule: WeightRule = {}): (value: string) => number {
  return optionParser((v) => parseWeight(v, rule));
}

export function addNameOption(command: Command): Command {
  return command.option(
    "--name <name>",
    "load balancer name (its state file)",
    optionParser(parseLbName),
    DEFAULT_LB_NAME,
  );
}

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new CliError(`${what} needs root (CAP_NET_ADMIN): run it with sudo`);
  }
}
