// A BIRD daemon in a test namespace: its own config, control socket and pid file in a
// directory of the test, run in the foreground (-f) so the test owns the process; killed
// when the test process exits, whatever happened.
import { type ChildProcess, execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Netns } from "./netns.js";

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of running) c.kill("SIGKILL");
});

export class BirdDaemon {
  private child: ChildProcess | undefined;
  private stderr = "";
  readonly conf: string;
  readonly socket: string;
  readonly pidFile: string;

  /** `dir` holds this daemon's files (bird.conf, bird.ctl, bird.pid). */
  constructor(
    readonly ns: Netns,
    readonly dir: string,
  ) {
    this.conf = join(dir, "bird.conf");
    this.socket = join(dir, "bird.ctl");
    this.pidFile = join(dir, "bird.pid");
  }

  get pid(): number | undefined {
    const c = this.child;
    return c && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  writeConf(text: string): void {
    writeFileSync(this.conf, text);
  }

  /** Starts BIRD and waits until its control socket answers (bounded). */
  async start(timeoutMs = 5000): Promise<void> {
    if (this.pid) throw new Error(`BIRD already runs in ${this.ns.name}`);
    this.stderr = "";
    const child = this.ns.spawn(
      "bird",
      ["-f", "-c", this.conf, "-s", this.socket, "-P", this.pidFile],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    child.stderr?.on("data", (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    running.add(child);
    child.on("exit", () => running.delete(child));
    this.child = child;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) {
        throw new Error(`BIRD in ${this.ns.name} exited (${child.exitCode}): ${this.stderr}`);
      }
      if (this.tryBirdc(["show", "status"]).ok) return;
      await sleep(20);
    }
    throw new Error(
      `BIRD in ${this.ns.name} did not answer within ${timeoutMs} ms: ${this.stderr}`,
    );
  }

  /** SIGTERM (BIRD closes its sessions with a Cease) and wait for the exit. */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
  }

  /** SIGKILL: the sessions die without a word; only the hold timer or BFD notice. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(sig);
    await Promise.race([exited, sleep(5000)]);
  }

  /** birdc output (without codes); throws on failure. */
  birdc(args: readonly string[]): string {
    return execFileSync("birdc", ["-s", this.socket, ...args], {
      encoding: "utf8",
      timeout: 10_000,
    });
  }

  tryBirdc(args: readonly string[]): { ok: boolean; out: string } {
    try {
      return { ok: true, out: this.birdc(args) };
    } catch (err) {
      const e = err as { stdout?: string; message: string };
      return { ok: false, out: e.stdout || e.message };
    }
  }

  /** Protocol name -> {state, since, info} from `show protocols`. */
  protocols(): Map<string, { proto: string; state: string; since: string; info: string }> {
    const out = new Map<string, { proto: string; state: string; since: string; info: string }>();
    for (const line of this.birdc(["show", "protocols"]).split("\n").slice(2)) {
      const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$/.exec(line);
      if (m) out.set(m[1], { proto: m[2], state: m[4], since: m[5], info: m[6].trim() });
    }
    return out;
  }

  /** The daemon's last words on stderr (for failure messages). */
  get log(): string {
    return this.stderr;
  }
}
