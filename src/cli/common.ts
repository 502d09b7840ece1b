// What every command group shares: argument parsers, error reporting, JSON output.
import { type Command, InvalidArgumentError } from "commander";
import { DEFAULT_NAME, parseFwmark } from "../state/store.js";

/** An error the user can act on: printed as one line, exit status 1. */
export class CliError extends Error {}

export function fail(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`nflb: ${message}\n`);
  if (process.env.NFLB_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
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

export function intArg(min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = /^(0x[0-9a-fA-F]+|[0-9]+)$/.test(value.trim()) ? Number(value) : Number.NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer ${min}..${max}`);
    }
    return n;
  };
}

export function fwmarkArg(value: string): number {
  try {
    return parseFwmark(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function addNameOption(command: Command): Command {
  return command.option("--name <name>", "load balancer name (its state file)", DEFAULT_NAME);
}

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new CliError(`${what} needs root (CAP_NET_ADMIN): run it with sudo`);
  }
}
