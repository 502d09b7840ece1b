// Fault sweeps: provisioning a service (rules + Maglev state) or tearing it down with a
// failure injected before, then after, each single operation (tool runs, writes of
// records, of the builtin-chain ownership file, of the state), one at a time, through a
// driver process in the namespace. Used by the setup-faults e2e tests.
import assert from "node:assert/strict";
import type { SetupSpec } from "../../src/netfilter/index.js";
import type { ServiceSpec } from "../../src/service/provision.js";
import { sweepNamespace, sweepStateDir } from "./killsweep.js";
import type { Topology } from "./netns.js";
import { builtModule, NetnsDriver } from "./nsdriver.js";
import { normalizedSnapshot } from "./rulesnap.js";

const PROVISION = builtModule("src/service/provision.js");
const SNAPSHOT = builtModule("test/helpers/rulesnap.js");
const STATE = builtModule("test/helpers/statedigest.js");

/** Operations that only read (their names, as the injected failure quotes them). */
const READ = /^(nft -j|nft -c|\S+-save |ip -N -j|ip -j|ip route get|unshare )/;
const quoted = (text: string) => /injected failure \w+ operation \d+ \((.*)\)/.exec(text)?.[1];

/** A service spec named `name`: nat, three IPv4 targets of weight 1-3 on 10.100.0.0/24. */
export function faultSpec(name: string, over: Partial<SetupSpec>): SetupSpec {
  return {
    name,
    mode: "nat",
    vips: ["10.200.0.1"],
    targets: [1, 2, 3].map((i) => ({ fwmark: i, address: `10.100.0.2${i}`, weight: i })),
    queue: { first: 0, last: 0 },
    queueBypass: false,
    synOnly: false,
    protocols: ["tcp", "udp"],
    ports: "80,443",
    statistic: "nth",
    snat: false,
    ...over,
  };
}

export interface Observed {
  rules: string;
  state: string | null;
}

/** Nothing before, so nothing after: compared byte for byte. */
export function exactly(a: Observed, b: Observed, label: string): void {
  assert.equal(b.rules, a.rules, label);
  assert.equal(b.state, a.state, label);
}

/** Replacing: the same rules (a restored nft table is a new one) and the same state. */
export function same(a: Observed, b: Observed, label: string): void {
  assert.equal(normalizedSnapshot(b.rules), normalizedSnapshot(a.rules), label);
  assert.equal(b.state, a.state, label);
}

export interface SweepResult {
  operations: number;
  faults: number;
  /** Faults that struck after the commit (the earlier setup's leftovers going). */
  afterCommit: number;
}

export class FaultSweeper {
  private constructor(
    private readonly d: NetnsDriver,
    private readonly name: string,
    private readonly cleanup: () => void,
  ) {}

  /** A quiet namespace of `topo` with a driver and a private state directory. */
  static async create(topo: Topology, name: string): Promise<FaultSweeper> {
    const lb = await sweepNamespace(topo, "flt");
    const state = sweepStateDir();
    const d = new NetnsDriver(lb, { NFLB_STATE_DIR: state.dir });
    return new FaultSweeper(d, name, () => {
      d.close();
      state.cleanup();
    });
  }

  close(): void {
    this.cleanup();
  }

  async observe(): Promise<Observed> {
    return {
      rules: await this.d.must<string>(SNAPSHOT, "localRuleSnapshot"),
      state: await this.d.must<string | null>(STATE, "stateDigest", this.name),
    };
  }

  async reset(): Promise<void> {
    await this.d.must(PROVISION, "removeService", this.name, { deleteState: true });
  }

  async provision(s: ServiceSpec): Promise<void> {
    await this.d.must(PROVISION, "provisionService", s, {});
  }

  /** planService (throws when it does). */
  async plan(s: ServiceSpec): Promise<unknown> {
    return this.d.must(PROVISION, "planService", s);
  }

  /** As `nflb deactivate` does it. */
  async deactivate(fwmarks: number[]): Promise<void> {
    await this.d.must(STATE, "deactivate", this.name, fwmarks);
  }

  /**
   * From `start`, provisions `change` with a failure before operation k, for k = 1, 2, ...
   * until it succeeds without the fault striking; then after every operation that changes
   * something (after a read it would be the same as before the next operation). A fault
   * before the commit must leave everything as at the start (`compare`); one after it
   * (while the earlier setup's leftovers go) leaves the new setup standing with the
   * leftovers on record, and provisioning again must then converge to exactly it.
   */
  async sweep(
    start: () => Promise<void>,
    change: ServiceSpec,
    compare: (before: Observed, after: Observed, label: string) => void,
  ): Promise<SweepResult> {
    const restart = async () => {
      await this.reset();
      await start();
    };
    await restart();
    await this.provision(change);
    const wanted = await this.observe();
    await restart();
    const initial = await this.observe();
    let afterCommit = 0;
    /** The operation struck (undefined: the fault never struck: no such operation). */
    const attempt = async (when: "before" | "after", op: number) => {
      const label = `fail-${when}:${op}`;
      const r = await this.d.call<{ warnings: string[] }>(PROVISION, "provisionService", change, {
        failAt: { action: "fail", when, op },
      });
      if (r.ok) {
        const what = r.result.warnings.map(quoted).find((w) => w !== undefined);
        if (what === undefined) return undefined;
        afterCommit++;
        await this.provision(change);
        const now = await this.observe();
        assert.equal(normalizedSnapshot(now.rules), normalizedSnapshot(wanted.rules), label);
        await restart();
        return what;
      }
      const what = quoted(r.error);
      assert.ok(what !== undefined, `${label}: ${r.error}`);
      assert.doesNotMatch(r.error, /rollback is incomplete/, label);
      compare(initial, await this.observe(), label);
      return what;
    };
    const changing: number[] = [];
    let op = 1;
    for (; ; op++) {
      const what = await attempt("before", op);
      if (what === undefined) break;
      if (!READ.test(what)) changing.push(op);
    }
    // The success just now changed things: back to the start for the faults after.
    await restart();
    for (const k of changing) assert.notEqual(await attempt("after", k), undefined);
    await this.reset();
    return { operations: op - 1, faults: op - 1 + changing.length, afterCommit };
  }

  /** Set up `s`, tear down with a fault at each operation, tear down again: nothing left. */
  async sweepTeardown(s: ServiceSpec): Promise<SweepResult> {
    await this.reset();
    const clean = await this.observe();
    const attempt = async (when: "before" | "after", op: number) => {
      await this.provision(s);
      const r = await this.d.call(PROVISION, "removeService", this.name, {
        failAt: { action: "fail", when, op },
      });
      if (r.ok) return undefined;
      assert.match(r.error, /injected failure/);
      await this.d.must(PROVISION, "removeService", this.name, {});
      assert.equal((await this.observe()).rules, clean.rules, `fail-${when}:${op}`);
      return quoted(r.error) ?? "";
    };
    const changing: number[] = [];
    let op = 1;
    for (; ; op++) {
      const what = await attempt("before", op);
      if (what === undefined) break;
      if (!READ.test(what)) changing.push(op);
    }
    for (const k of changing) assert.notEqual(await attempt("after", k), undefined);
    await this.reset();
    return { operations: op - 1, faults: op - 1 + changing.length, afterCommit: 0 };
  }
}

export const describeResult = (r: SweepResult): string =>
  `${r.operations} operations, ${r.faults} faults (${r.afterCommit} after the commit)`;
