// Running the system tools (nft, iptables-nft, ip). Synchronous on purpose: every step of
// a setup must finish before the next starts, and each call is short.
import { execFileSync } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { operation } from "./faults.js";
import { SetupError } from "./types.js";

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** sbin directories are often missing from a non-login PATH. */
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"];
const found = new Map<string, string | undefined>();

/** Absolute path of an executable, or undefined. */
export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  let path: string | undefined;
  for (const dir of dirs) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      path = join(dir, name);
      break;
    } catch {
      // not here
    }
  }
  found.set(name, path);
  return path;
}

function resolve(cmd: string): string {
  const path = findTool(cmd);
  if (!path) throw new SetupError(`${cmd} not found (install iproute2, nftables and iptables)`);
  return path;
}

/** Runs a tool; returns its exit status and output, never throws for a non-zero status. */
export function tryRun(cmd: string, args: readonly string[], input?: string): RunResult {
  return operation([cmd, ...args.slice(0, 4)].join(" "), () => runTool(cmd, args, input));
}

function runTool(cmd: string, args: readonly string[], input?: string): RunResult {
  try {
    const stdout = execFileSync(resolve(cmd), args, {
      encoding: "utf8",
      input: input ?? "",
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 30_000,
    });
    return { status: 0, stdout, stderr: "" };
  } catch (err) {
    if (err instanceof SetupError) throw err;
    const e = err as { status?: number | null; stdout?: string; stderr?: string; message: string };
    return { status: e.status ?? 1, stdout: e.stdout ?? "", stderr: e.stderr || e.message };
  }
}

/** Runs a tool; throws a SetupError carrying the command and its stderr on failure. */
export function run(cmd: string, args: readonly string[], input?: string): string {
  const r = tryRun(cmd, args, input);
  if (r.status !== 0) {
    throw new SetupError(`${[cmd, ...args].join(" ")} failed: ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** CAP_NET_ADMIN in the effective set of this process. */
export function hasNetAdmin(): boolean {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    return m ? (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n : false;
  } catch {
    return process.getuid?.() === 0;
  }
}

/** A sysctl of this network namespace, or undefined when it does not exist. */
export function readSysctl(key: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, "utf8").trim();
  } catch {
    return undefined;
  }
}
