// The `nflb` CLI and the `nflb lb` daemon as the bench runs them: in the lb namespace,
// with the bench's state directory, the daemon pinned to the last CPU.
import { type ChildProcess, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { C as COUNTER } from "../../src/dataplane/counters.js";
import { target4 } from "../../test/helpers/lbtopo.js";
import type { Netns } from "../../test/helpers/netns.js";
import { queueStatsOf, sleep } from "../traffic.js";
import { type BenchContext, have, LB_NAME, QUEUE } from "./context.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export function nflb(ctx: BenchContext, args: readonly string[]): string {
  try {
    return execFileSync("ip", ["netns", "exec", ctx.topo.lb.name, process.execPath, CLI, ...args], {
      encoding: "utf8",
      env: { ...process.env, NFLB_STATE_DIR: ctx.stateDir },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 30_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`nflb ${args.join(" ")}: ${e.stderr?.trim() || e.message}`);
  }
}

/** `nflb lb`'s default queue length, as its --help states it; undefined if not found. */
export function daemonDefaultQlength(ctx: BenchContext): number | undefined {
  try {
    const m = /--qlength <n>[\s\S]*?\(default: (\d+)\)/.exec(nflb(ctx, ["lb", "--help"]));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function targetArgs(ctx: BenchContext): string[] {
  return ctx.topo.targets.flatMap((_, i) => ["--target", `${i + 1}=${target4(i + 1)}`]);
}

/** Forgets the NAT bindings of an earlier scenario, so every run starts with new flows. */
export function flushConntrack(lb: Netns): void {
  if (have("conntrack")) lb.tryExec("conntrack", ["-F"]);
}

/** Daemons still running: killed if the bench exits on a signal (test/helpers/netns.ts
 * exits on SIGINT/SIGTERM) or an uncaught error. */
const liveDaemons = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of liveDaemons) child.kill("SIGKILL");
});

export class Daemon {
  private exited = false;
  /** The last 64 KiB the daemon printed (its log: a few lines per start and change). */
  output = "";
  readonly exit: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    child.stdout?.on("data", (d: Buffer) => this.append(d));
    child.stderr?.on("data", (d: Buffer) => this.append(d));
    liveDaemons.add(child);
    this.exit = new Promise((resolve) => {
      child.on("exit", (code) => {
        this.exited = true;
        liveDaemons.delete(child);
        resolve(code);
      });
    });
  }

  private append(d: Buffer): void {
    this.output = (this.output + d.toString()).slice(-65536);
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error("daemon has no pid");
    return this.child.pid;
  }

  /** Starts `nflb lb` in the lb namespace and waits until its queue is bound. */
  static async start(ctx: BenchContext, extra: readonly string[]): Promise<Daemon> {
    const pin = ctx.options.pin && cpus().length >= 2 && have("taskset");
    const argv = [
      ...(pin ? ["taskset", "-c", String(cpus().length - 1)] : []),
      process.execPath,
      CLI,
      "lb",
      "--name",
      LB_NAME,
      "--queue",
      String(QUEUE),
      ...extra,
    ];
    const child = ctx.topo.lb.spawn(argv[0], argv.slice(1), {
      env: { ...process.env, NFLB_STATE_DIR: ctx.stateDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const daemon = new Daemon(child);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (daemon.exited) throw new Error(`nflb lb exited at start:\n${daemon.output.trim()}`);
      if (queueStatsOf(daemon.pid).some((q) => q.queue === QUEUE)) {
        // The worker binds before it polls; give it a moment to enter its loop.
        await sleep(200);
        return daemon;
      }
      await sleep(50);
    }
    await daemon.stop();
    throw new Error(`nflb lb did not bind queue ${QUEUE} within 15 s:\n${daemon.output.trim()}`);
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.exited) this.child.kill(sig);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill("SIGCONT");
    this.child.kill("SIGTERM");
    const timeout = sleep(8_000).then(() => "timeout" as const);
    if ((await Promise.race([this.exit, timeout])) === "timeout") {
      this.child.kill("SIGKILL");
      await this.exit;
    }
  }
}

export function withOutput(err: unknown, daemon: Daemon): Error {
  const tail = daemon.output.trim().slice(-4000);
  return new Error(`${(err as Error).message}${tail ? `\nnflb lb said:\n${tail}` : ""}`);
}

/** A counter of the daemon's queue (its counters file; default: packets given a
 * verdict), or NaN if unreadable. */
export function daemonPackets(ctx: BenchContext, counter: number = COUNTER.packets): number {
  try {
    const bytes = readFileSync(join(ctx.stateDir, `${LB_NAME}.q${QUEUE}.stats`));
    const words = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length >> 3);
    return words[counter];
  } catch {
    return Number.NaN;
  }
}
