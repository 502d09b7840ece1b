// Runs the nflb CLI and the `nflb lb` daemon inside a namespace, as a user would.
import type { ChildProcess } from "node:child_process";
import { CLI } from "./cli.js";
import type { Netns } from "./netns.js";

/** Runs `nflb ARGS` in `ns`; returns stdout, throws with stderr on failure. */
export function nflbIn(ns: Netns, ...args: string[]): string {
  return ns.exec(process.execPath, [CLI, ...args]);
}

/** Runs `nflb ARGS` in `ns` and returns status and output without throwing. */
export function tryNflbIn(ns: Netns, ...args: string[]) {
  return ns.tryExec(process.execPath, [CLI, ...args]);
}

export interface Daemon {
  child: ChildProcess;
  /** Everything the daemon logged so far. */
  log(): string;
  /** Sends a signal and waits for the exit status (SIGKILL after 10 s). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `nflb lb ARGS` in `ns` and resolves once every queue is served. */
export function startDaemon(ns: Netns, ...args: string[]): Promise<Daemon> {
  const child = ns.spawn(process.execPath, [CLI, "lb", "--loglevel", "info", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code, signal) => {
      exitCode = code ?? (signal ? 128 : null);
      resolve(exitCode);
    });
  });
  const daemon: Daemon = {
    child,
    log: () => stderr,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (exitCode !== undefined) return exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`daemon did not start:\n${stderr}`));
    }, 15_000);
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (d: string) => {
      stderr += d;
      if (/serving queue/.test(stderr)) {
        clearTimeout(timer);
        resolve(daemon);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited (${code}) before serving:\n${stderr}`));
    });
  });
}
