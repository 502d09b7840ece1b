// exec: run a command (no shell), exit status 0 = up. Its environment names the target.
// The command runs in its own process group, killed whole at the timeout, so a script's
// children do not outlive the check.
import { spawn } from "node:child_process";
import type { ExecCheck } from "../spec.js";
import { attempt, type ProbeOutcome } from "./attempt.js";

/** Output kept for the reason of a failure (its first line). */
const OUTPUT_LIMIT = 4096;

export interface ExecTarget {
  service: string;
  fwmark: number;
  address: string;
  port?: number;
}

/** The variables an exec check finds in its environment. */
export function execEnvironment(t: ExecTarget, spec: ExecCheck): Record<string, string> {
  const env: Record<string, string> = {
    NFLB_SERVICE: t.service,
    NFLB_FWMARK: String(t.fwmark),
    NFLB_ADDRESS: t.address,
    NFLB_TIMEOUT_MS: String(spec.timeoutMs),
  };
  if (t.port !== undefined) env.NFLB_PORT = String(t.port);
  if (spec.source !== undefined) env.NFLB_SOURCE = spec.source;
  return env;
}

function firstLine(output: string): string {
  const line = output.split("\n").find((l) => l.trim() !== "") ?? "";
  const trimmed = line.trim();
  return trimmed.length > 80 ? `${trimmed.slice(0, 77)}...` : trimmed;
}

export function probeExec(
  target: ExecTarget,
  spec: ExecCheck,
  signal?: AbortSignal,
): Promise<ProbeOutcome> {
  return attempt(spec.timeoutMs, signal, (finish, onDone) => {
    const [file, ...args] = spec.command;
    const child = spawn(file, args, {
      env: { ...process.env, ...execEnvironment(target, spec) },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let exited = false;
    let output = "";
    const keep = (d: Buffer) => {
      if (output.length < OUTPUT_LIMIT) output += d.toString("utf8");
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    onDone(() => {
      if (!exited && child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      child.stdout?.destroy();
      child.stderr?.destroy();
    });
    child.on("error", (err: NodeJS.ErrnoException) => {
      exited = true;
      finish(false, `cannot run ${file}: ${err.code ?? err.message}`);
    });
    child.on("exit", (code, sig) => {
      exited = true;
      if (code === 0) return finish(true, "exit 0");
      const line = firstLine(output);
      const what = sig ? `killed by ${sig}` : `exit ${code}`;
      finish(false, line ? `${what}: ${line}` : what);
    });
  });
}
