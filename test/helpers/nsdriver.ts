// A long-lived node process inside a network namespace that calls functions of the built
// modules on request: sweeps of hundreds of calls pay for one node start-up, not one each.
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Netns } from "./netns.js";

const DRIVER = String.raw`
import { createInterface } from "node:readline";
const modules = new Map();
for await (const line of createInterface({ input: process.stdin })) {
  const { id, module, fn, args } = JSON.parse(line);
  let reply;
  try {
    if (!modules.has(module)) modules.set(module, await import(module));
    const result = await modules.get(module)[fn](...args);
    reply = { id, ok: true, result: result ?? null };
  } catch (e) {
    reply = { id, ok: false, name: e?.name, error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
`;

/** dist/<path> of a built module, for NetnsDriver.call. */
export function builtModule(path: string): string {
  return fileURLToPath(new URL(`../../${path}`, import.meta.url));
}

export type DriverResult<T> = { ok: true; result: T } | { ok: false; name: string; error: string };

export class NetnsDriver {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (r: DriverResult<unknown>) => void>();
  private next = 0;

  constructor(ns: Netns, env: Record<string, string> = {}) {
    this.child = ns.spawn(process.execPath, ["--input-type=module", "-e", DRIVER], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, ...env },
    });
    const lines = createInterface({ input: this.child.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      const { id, ...r } = JSON.parse(line) as { id: number } & DriverResult<unknown>;
      this.pending.get(id)?.(r);
      this.pending.delete(id);
    });
    this.child.on("exit", () => {
      for (const resolve of this.pending.values()) {
        resolve({ ok: false, name: "DriverExit", error: "driver exited" });
      }
      this.pending.clear();
    });
  }

  /** Calls `fn(...args)` of the module at `path` (absolute, or from builtModule). */
  call<T = unknown>(path: string, fn: string, ...args: unknown[]): Promise<DriverResult<T>> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve as (r: DriverResult<unknown>) => void);
      this.child.stdin?.write(`${JSON.stringify({ id, module: path, fn, args })}\n`);
    });
  }

  /** Like call, but throws when the call failed. */
  async must<T = unknown>(path: string, fn: string, ...args: unknown[]): Promise<T> {
    const r = await this.call<T>(path, fn, ...args);
    if (!r.ok) throw new Error(`${fn} failed: ${r.name}: ${r.error}`);
    return r.result;
  }

  close(): void {
    this.child.stdin?.end();
  }
}
