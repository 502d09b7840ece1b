// One load-balancer test bed: the namespace topology, a private state directory, target
// servers, `nflb setup`s and daemons, all undone by close() in reverse order.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Daemon, nflbIn, startDaemon, tryNflbIn } from "./daemon.js";
import { type LbTopology, lbTopology, startTargetServer } from "./targets.js";

export class LbFixture {
  private readonly cleanups: (() => unknown)[] = [];

  private constructor(
    readonly topology: LbTopology,
    readonly stateDir: string,
  ) {}

  /** Builds the topology; nflb commands of this process and its children use a private state dir. */
  static create(): LbFixture {
    const stateDir = mkdtempSync(join(tmpdir(), "nflb-e2e-"));
    process.env.NFLB_STATE_DIR = stateDir;
    let topology: LbTopology;
    try {
      topology = lbTopology();
    } catch (err) {
      rmSync(stateDir, { recursive: true, force: true });
      throw err;
    }
    const fixture = new LbFixture(topology, stateDir);
    fixture.onClose(() => rmSync(stateDir, { recursive: true, force: true }));
    fixture.onClose(() => topology.topo.destroy());
    return fixture;
  }

  onClose(fn: () => unknown): void {
    this.cleanups.push(fn);
  }

  /** On every target, a server answering TCP and UDP on `port` with "t<i>" (UDP on `udpAddresses(i)`). */
  async serveNames(port: number, udpAddresses: (index: number) => string[]): Promise<void> {
    for (const [i, ns] of this.topology.targets.entries()) {
      const server = await startTargetServer(ns, `t${i + 1}`, port, udpAddresses(i));
      this.onClose(() => server.stop());
    }
  }

  /** `nflb setup --name NAME ARGS` in the lb namespace, torn down on close. */
  setup(name: string, ...args: string[]): void {
    nflbIn(this.topology.lb, "setup", "--name", name, ...args);
    this.onClose(() => {
      tryNflbIn(this.topology.lb, "teardown", "--name", name);
    });
  }

  /** `--target i=ADDR` for each target, in the given family. */
  targetArgs(family: "v4" | "v6"): string[] {
    return this.topology.targetAddrs.flatMap((a, i) => ["--target", `${i + 1}=${a[family]}`]);
  }

  /** Starts `nflb lb --name NAME --queue QUEUE` in the lb namespace, stopped on close. */
  daemon(name: string, queue: string): Promise<Daemon> {
    return this.daemonWith(name, "--queue", queue);
  }

  /** Starts `nflb lb --name NAME ARGS` in the lb namespace, stopped on close. */
  async daemonWith(name: string, ...args: string[]): Promise<Daemon> {
    const d = await startDaemon(this.topology.lb, "--name", name, ...args);
    this.onClose(() => d.stop());
    return d;
  }

  /** Runs `nflb ARGS` in the lb namespace. */
  nflb(...args: string[]): string {
    return nflbIn(this.topology.lb, ...args);
  }

  async close(): Promise<void> {
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning up
      }
    }
  }
}
