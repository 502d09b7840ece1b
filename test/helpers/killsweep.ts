// Kill sweeps: `nflb setup` / `nflb teardown` killed by SIGKILL at every operation
// boundary (or at swept times), then `nflb teardown`; the namespace must then be exactly
// as before the setup. Shared by the e2e tests and scripts/kill-sweep.ts.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CLI } from "./cli.js";
import { link, type Netns, type Topology } from "./netns.js";
import { builtModule, NetnsDriver } from "./nsdriver.js";
import { ruleSnapshot } from "./rulesnap.js";

export interface KillMode {
  label: string;
  /** `nflb setup` arguments after `--name`. */
  args: string[];
}

const TARGETS4 = [
  "--target",
  "1=10.100.0.21",
  "--target",
  "2=10.100.0.22@2",
  "--target",
  "3=10.100.0.23",
];

/** The setup modes swept: every mode of the rules, with the options that add objects. */
export const KILL_MODES: Record<string, KillMode> = {
  nat: {
    label: "nat",
    args: [
      "--mode",
      "nat",
      "--vip",
      "10.200.0.1",
      "--proto",
      "tcp,udp",
      "--ports",
      "80,443",
      ...TARGETS4,
    ],
  },
  synOnly: {
    label: "nat --syn-only --snat",
    args: [
      "--mode",
      "nat",
      "--syn-only",
      "--snat",
      "--queue",
      "2:3",
      "--vip",
      "10.200.0.1",
      ...TARGETS4,
    ],
  },
  statistic: {
    label: "statistic",
    args: ["--mode", "statistic", "--statistic", "random", "--vip", "10.200.0.1", ...TARGETS4],
  },
  dsr: {
    label: "dsr",
    args: ["--mode", "dsr", "--vip", "10.200.0.1", ...TARGETS4],
  },
  dsrFragments: {
    label: "dsr --fragments --tier-peer",
    args: [
      "--mode",
      "dsr",
      "--fragments",
      "--proto",
      "udp",
      "--vip",
      "10.200.0.1",
      ...TARGETS4,
      "--tier-peer",
      "102=10.100.0.3",
    ],
  },
  dsr6: {
    label: "dsr IPv6",
    args: [
      "--mode",
      "dsr",
      "--vip",
      "fd00:200::1",
      "--target",
      "1=fd00:100::21",
      "--target",
      "2=fd00:100::22",
    ],
  },
};

/** nflb's run directory of `ns` (per namespace, named after its nsfs inode). */
export function runDirOf(ns: Netns): string {
  const inode = ns.exec("stat", ["-L", "-c", "%i", "/proc/self/ns/net"]).trim();
  return join(process.env.NFLB_RUN_DIR || "/run/nflb", `netns-${inode}`);
}

/**
 * A new namespace may get the inode of one that is gone, and with it what nflb (or
 * anything else) left in that one's run directory: tests that compare the directory
 * start from an empty one.
 */
export function clearRunDir(ns: Netns): void {
  rmSync(runDirOf(ns), { recursive: true, force: true });
}

/**
 * A namespace to set up in, linked to a peer namespace (the dsr targets' network:
 * 10.100.0.0/24, fd00:100::/64), quiet: no duplicate address detection, its link-local
 * routes in place, so that snapshots differ only by what setup does.
 */
export async function sweepNamespace(topo: Topology, role: string): Promise<Netns> {
  const lb = topo.add(role);
  clearRunDir(lb);
  const peer = topo.add(`${role}p`);
  for (const ns of [lb, peer]) {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
  }
  link(lb, "eth0", ["10.100.0.1/24", "fd00:100::1/64"], peer, "eth0", [
    "10.100.0.2/24",
    "fd00:100::2/64",
  ]);
  // A router, as a load balancer is (no warnings about forwarding or routes to the VIPs).
  lb.sysctl("net.ipv4.ip_forward", "1");
  lb.sysctl("net.ipv6.conf.all.forwarding", "1");
  lb.exec("ip", ["route", "add", "default", "via", "10.100.0.2"]);
  lb.exec("ip", ["-6", "route", "add", "default", "via", "fd00:100::2"]);
  let last = "";
  for (let i = 0; i < 100; i++) {
    const now = ruleSnapshot(lb);
    if (now === last && now.includes("fe80::")) return lb;
    last = now;
    await sleep(100);
  }
  throw new Error(`namespace ${lb.name} did not settle`);
}

export interface CliRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Waits until no process of the group `pgid` is left (tools a killed command started). */
async function groupGone(pgid: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return;
    }
    await sleep(10);
  }
  throw new Error(`processes of group ${pgid} still running after 5 s`);
}

/**
 * Runs `nflb ARGS` in `ns` in a process group of its own; `killAfterMs` sends SIGKILL to
 * nflb (only to it, as a crash would) that long after the start. Resolves once nflb and
 * every tool it started have ended.
 */
export function runCli(
  ns: Netns,
  args: readonly string[],
  env: Record<string, string>,
  killAfterMs?: number,
): Promise<CliRun> {
  const child: ChildProcess = ns.spawn(process.execPath, [CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
    detached: true,
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const timer =
    killAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (status, signal) => {
      clearTimeout(timer);
      groupGone(child.pid as number).then(
        () => resolve({ status, signal, stdout, stderr }),
        reject,
      );
    });
  });
}

export interface SweepOutcome {
  /** Kills that struck (the command died by SIGKILL). */
  kills: number;
  /** Per outcome, how many kills ended so: see classify(). */
  outcomes: Record<string, number>;
  /** Operations of the command (kills at every boundary: operations + 1). */
  operations: number;
  /** Kills after which the namespace differed from before: label and the difference. */
  failures: string[];
}

function count(o: SweepOutcome, key: string): void {
  o.outcomes[key] = (o.outcomes[key] ?? 0) + 1;
}

/** The lines of `after` that are not in `before` and the other way round. */
export function lineDiff(before: string, after: string): string {
  const a = new Set(before.split("\n"));
  const b = new Set(after.split("\n"));
  return [
    ...[...a].filter((l) => !b.has(l)).map((l) => `- ${l}`),
    ...[...b].filter((l) => !a.has(l)).map((l) => `+ ${l}`),
  ].join("\n");
}

export interface SweepBed {
  ns: Netns;
  driver: NetnsDriver;
  stateDir: string;
}

/** A sweep namespace with its own state directory and a driver in it. */
export async function sweepBed(
  topo: Topology,
  role: string,
): Promise<SweepBed & { close(): void }> {
  const ns = await sweepNamespace(topo, role);
  const state = sweepStateDir();
  const driver = new NetnsDriver(ns, { NFLB_STATE_DIR: state.dir });
  return {
    ns,
    driver,
    stateDir: state.dir,
    close: () => {
      driver.close();
      state.cleanup();
    },
  };
}

/** A private state directory for one sweep. */
export function sweepStateDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "nflb-sweep-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface SweepArgs {
  ns: Netns;
  /** A driver in `ns` (NFLB_STATE_DIR = stateDir): the teardowns after the kills. */
  driver: NetnsDriver;
  name: string;
  mode: KillMode;
  stateDir: string;
  /** Set up (fully) before each killed setup: the kill then hits a replacing setup. */
  earlier?: KillMode;
}

const PROVISION = builtModule("src/service/provision.js");
const FAULT = (k: number) => (k === 0 ? "kill-before:1" : `kill-after:${k}`);

/**
 * `nflb teardown`, as the user runs it after a crash: the same removeService() as the
 * command, called through the driver (a node start-up per kill is what makes sweeps slow).
 */
async function teardown(a: SweepArgs): Promise<{ removed: boolean; error?: string }> {
  const r = await a.driver.call<{ rules: boolean }>(PROVISION, "removeService", a.name, {});
  return r.ok ? { removed: r.result.rules } : { removed: false, error: r.error };
}

/** Removes the rules and the state, so that every kill starts from the same place. */
async function reset(a: SweepArgs): Promise<void> {
  const r = await teardown(a);
  if (r.error) throw new Error(`teardown failed: ${r.error}`);
  // The state stays after teardown by design: removed here, with any half-written file
  // a killed `init` left.
  for (const f of readdirSync(a.stateDir)) {
    if (f === a.name || f.startsWith(`${a.name}.`)) rmSync(join(a.stateDir, f), { force: true });
  }
}

const NETFILTER = builtModule("src/netfilter/index.js");
const recordedSpecs = new Map<string, unknown>();

/**
 * `nflb setup` of `mode`, fully. The first time by the command itself; later through the
 * driver with the spec the command recorded (the same provisioning, without a start-up).
 */
async function setUp(a: SweepArgs, mode: KillMode): Promise<void> {
  const key = `${a.name}\0${mode.args.join(" ")}`;
  const spec = recordedSpecs.get(key);
  if (spec) {
    await a.driver.must(PROVISION, "provisionService", { setup: spec }, {});
    return;
  }
  const r = await runCli(a.ns, ["setup", "--name", a.name, ...mode.args], {
    NFLB_STATE_DIR: a.stateDir,
  });
  if (r.status !== 0) throw new Error(`setup ${mode.label} failed: ${r.stderr}`);
  recordedSpecs.set(key, await a.driver.must(NETFILTER, "readSetupRecord", a.name));
}

/** The outcome of one kill, from the namespace after it and after the teardown. */
async function recover(
  a: SweepArgs,
  clean: string,
  label: string,
  out: SweepOutcome,
  names: [recovered: string, untouched: string],
): Promise<void> {
  out.kills++;
  if (ruleSnapshot(a.ns) === clean) {
    // Killed before its first change (and before the record): nothing to tear down.
    count(out, names[1]);
    return;
  }
  const down = await teardown(a);
  const after = ruleSnapshot(a.ns);
  if (down.error || after !== clean) {
    out.failures.push(`${label}: ${down.error ?? ""}\n${lineDiff(clean, after)}`);
    count(out, "LEFT CHANGES");
  } else count(out, down.removed ? names[0] : "no record, teardown cleared the lock");
}

/**
 * `nflb setup` killed at every operation boundary (before the first operation, after each
 * one), each time followed by a teardown: the namespace must be exactly `clean`.
 */
export async function sweepSetupKills(a: SweepArgs): Promise<SweepOutcome> {
  const env = { NFLB_STATE_DIR: a.stateDir };
  const clean = ruleSnapshot(a.ns);
  const out: SweepOutcome = { kills: 0, outcomes: {}, operations: 0, failures: [] };
  for (let k = 0; ; k++) {
    if (a.earlier) await setUp(a, a.earlier);
    const r = await runCli(a.ns, ["setup", "--name", a.name, ...a.mode.args], {
      ...env,
      NFLB_TEST_FAULT: FAULT(k),
    });
    if (r.signal !== "SIGKILL") {
      if (r.status !== 0) throw new Error(`setup failed at ${FAULT(k)}: ${r.stderr}`);
      out.operations = k - 1;
      await reset(a);
      break;
    }
    await recover(a, clean, FAULT(k), out, ["teardown removed all", "nothing changed yet"]);
    await reset(a);
  }
  return out;
}

/** `nflb teardown` killed at every operation boundary, then run again: back to `clean`. */
export async function sweepTeardownKills(a: SweepArgs): Promise<SweepOutcome> {
  const env = { NFLB_STATE_DIR: a.stateDir };
  const clean = ruleSnapshot(a.ns);
  const out: SweepOutcome = { kills: 0, outcomes: {}, operations: 0, failures: [] };
  for (let k = 0; ; k++) {
    await setUp(a, a.mode);
    const r = await runCli(a.ns, ["teardown", "--name", a.name], {
      ...env,
      NFLB_TEST_FAULT: FAULT(k),
    });
    if (r.signal !== "SIGKILL") {
      if (r.status !== 0) throw new Error(`teardown failed at ${FAULT(k)}: ${r.stderr}`);
      out.operations = k - 1;
      await reset(a);
      break;
    }
    await recover(a, clean, FAULT(k), out, ["second teardown finished it", "all removed"]);
    await reset(a);
  }
  return out;
}

/** Median of three. */
const median3 = (xs: number[]) => xs.sort((x, y) => x - y)[1];

/**
 * Milliseconds from the start of `nflb ARGS` to its first operation (node's start-up and
 * the arguments; no kill before that can change anything), and to its end.
 */
async function commandWindow(
  a: SweepArgs,
  args: string[],
  before: () => Promise<void>,
): Promise<{ firstMs: number; endMs: number }> {
  const env = { NFLB_STATE_DIR: a.stateDir };
  const first: number[] = [];
  const end: number[] = [];
  for (let i = 0; i < 3; i++) {
    for (const [fault, into] of [
      ["kill-before:1", first],
      ["", end],
    ] as const) {
      await before();
      const t0 = performance.now();
      await runCli(a.ns, args, fault ? { ...env, NFLB_TEST_FAULT: fault } : env);
      into.push(performance.now() - t0);
      await reset(a);
    }
  }
  return { firstMs: Math.round(median3(first)), endMs: Math.round(median3(end)) };
}

export interface TimeSweepOutcome extends SweepOutcome {
  /** Median time from the command's start to its first operation, and to its end. */
  firstMs: number;
  endMs: number;
}

/**
 * `nflb setup` killed `stepMs` apart from shortly before its first operation to past its
 * end (measured first), each kill followed by a teardown; kills landing after the command
 * ended count as "completed".
 */
export async function sweepSetupKillTimes(a: SweepArgs, stepMs: number): Promise<TimeSweepOutcome> {
  const env = { NFLB_STATE_DIR: a.stateDir };
  const clean = ruleSnapshot(a.ns);
  const args = ["setup", "--name", a.name, ...a.mode.args];
  const w = await commandWindow(a, args, async () => {});
  const out: TimeSweepOutcome = { kills: 0, outcomes: {}, operations: 0, failures: [], ...w };
  for (let t = Math.max(0, w.firstMs - 20); t <= w.endMs * 1.15; t += stepMs) {
    const r = await runCli(a.ns, args, env, t);
    if (r.signal !== "SIGKILL") count(out, "completed before the kill");
    else await recover(a, clean, `${t} ms`, out, ["teardown removed all", "nothing changed yet"]);
    await reset(a);
  }
  return out;
}

/** `nflb teardown` killed `stepMs` apart over its run time, then run again. */
export async function sweepTeardownKillTimes(
  a: SweepArgs,
  stepMs: number,
): Promise<TimeSweepOutcome> {
  const env = { NFLB_STATE_DIR: a.stateDir };
  const clean = ruleSnapshot(a.ns);
  const args = ["teardown", "--name", a.name];
  const w = await commandWindow(a, args, () => setUp(a, a.mode));
  const out: TimeSweepOutcome = { kills: 0, outcomes: {}, operations: 0, failures: [], ...w };
  for (let t = Math.max(0, w.firstMs - 20); t <= w.endMs * 1.15; t += stepMs) {
    await setUp(a, a.mode);
    const r = await runCli(a.ns, args, env, t);
    if (r.signal !== "SIGKILL") count(out, "completed before the kill");
    else await recover(a, clean, `${t} ms`, out, ["second teardown finished it", "all removed"]);
    await reset(a);
  }
  return out;
}

/** Every kill ended clean, and there was one at every boundary (diagnostics: the table). */
export function assertSweeps(
  t: { diagnostic: (m: string) => void },
  results: [string, SweepOutcome][],
): void {
  for (const [label, r] of results) {
    t.diagnostic(
      `${label}: ${r.operations} operations, ${r.kills} kills: ${JSON.stringify(r.outcomes)}`,
    );
    assert.deepEqual(r.failures, [], label);
    assert.equal(r.kills, r.operations + 1, label);
  }
}
