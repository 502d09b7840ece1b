import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { after, before, test } from "node:test";
import { buildMaglevTable } from "../../src/maglev/maglev.js";
import {
  activateTargets,
  deactivateTargets,
  deleteState,
  initState,
  openState,
  StateError,
  statePath,
} from "../../src/state/store.js";
import { tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
before(() => {
  process.env.NFLB_STATE_DIR = dirs.dir;
});
after(() => dirs.cleanup());

const base = {
  tableSize: 997,
  maxTargets: 16,
  ownFwmark: 0,
  hashSeed: 0,
  sctpPortsOnly: true,
  sctpEncapPort: 0,
};

test("init creates the state once; same settings again is a no-op, others are refused", () => {
  const r = initState({ ...base, name: "a" });
  assert.equal(r.created, true);
  assert.equal(initState({ ...base, name: "a" }).created, false);
  assert.throws(() => initState({ ...base, name: "a", tableSize: 1009 }), /already exists/);
  const s = openState("a");
  assert.equal(s.config.tableSize, 997);
  assert.equal(s.snapshot().targets.length, 0);
  assert.ok(
    s.snapshot().table.every((v) => v === 0),
    "empty table without targets",
  );
  s.close();
});

test("a non-prime M becomes the prime below it, with a message", () => {
  const r = initState({ ...base, name: "np", tableSize: 1000 });
  assert.match(r.message ?? "", /997/);
  const s = openState("np");
  assert.equal(s.config.tableSize, 997);
  s.close();
});

test("bad settings are refused and create nothing", () => {
  assert.throws(() => initState({ ...base, name: "bad", tableSize: 2 }), StateError);
  assert.throws(() => initState({ ...base, name: "bad", maxTargets: 0 }), StateError);
  assert.throws(() => initState({ ...base, name: "bad/x" }), /invalid load balancer name/);
  assert.equal(existsSync(statePath("bad")), false);
  assert.deepEqual(
    readdirSync(dirs.dir).filter((f) => f.includes(".tmp.")),
    [],
    "no temporary files left",
  );
});

test("activate and deactivate publish a new table that equals the Maglev build of the active set", () => {
  initState({ ...base, name: "b" });
  const s = openState("b");
  const g0 = s.generation();
  s.update((t) => activateTargets(t, [10, 20, 30], 1, 16));
  s.update((t) => activateTargets(t, [40], 3, 16));
  s.update((t) => deactivateTargets(t, [20]));
  const snap = s.snapshot();
  assert.equal(snap.generation, g0 + 3);
  const expected = buildMaglevTable(
    [
      { fwmark: 10, weight: 1 },
      { fwmark: 30, weight: 1 },
      { fwmark: 40, weight: 3 },
    ],
    997,
  );
  assert.deepEqual(snap.table, expected);
  assert.deepEqual(
    snap.targets.map((t) => [t.fwmark, t.weight, t.active]),
    [
      [10, 1, true],
      [20, 1, false],
      [30, 1, true],
      [40, 3, true],
    ],
  );
  s.close();
});

test("a failed change publishes nothing", () => {
  initState({ ...base, name: "c" });
  const s = openState("c");
  s.update((t) => activateTargets(t, [1], 1, 16));
  const before = s.snapshot();
  assert.throws(() => s.update((t) => deactivateTargets(t, [99])), /unknown fwmark 99/);
  assert.throws(() => s.update((t) => activateTargets(t, [2], 0, 16)), /invalid weight/);
  const afterSnap = s.snapshot();
  assert.equal(afterSnap.generation, before.generation);
  assert.deepEqual(afterSnap.table, before.table);
  s.close();
});

test("slots: full slots are refused unless an inactive one can be reused", () => {
  initState({ ...base, name: "d", maxTargets: 2 });
  const s = openState("d");
  s.update((t) => activateTargets(t, [1, 2], 1, 2));
  assert.throws(() => s.update((t) => activateTargets(t, [3], 1, 2)), /slots are in use/);
  s.update((t) => deactivateTargets(t, [1]));
  s.update((t) => activateTargets(t, [3], 1, 2));
  assert.deepEqual(
    s
      .snapshot()
      .targets.map((t) => [t.slot, t.fwmark])
      .sort(),
    [
      [0, 3],
      [1, 2],
    ],
  );
  s.close();
});

test("delete removes the state; opening it afterwards is a clear error", () => {
  initState({ ...base, name: "e" });
  assert.equal(deleteState("e"), true);
  assert.equal(deleteState("e"), false);
  assert.throws(() => openState("e"), /nflb init/);
});

function child(script: string): Promise<string> {
  const storeUrl = new URL("../../src/state/store.js", import.meta.url).href;
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import * as store from ${JSON.stringify(storeUrl)};\n${script}`,
      ],
      {
        env: { ...process.env, NFLB_STATE_DIR: dirs.dir },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => {
      out += d;
    });
    p.stderr.on("data", (d) => {
      err += d;
    });
    p.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`child failed: ${err}`))));
  });
}

test("concurrent writers in separate processes are serialised: no update is lost", async () => {
  initState({ ...base, name: "f", maxTargets: 100 });
  const writer = (from: number) => `
    const s = store.openState("f");
    for (let m = ${from}; m < ${from} + 40; m++) s.update((t) => store.activateTargets(t, [m], 1, 100));
    s.close();`;
  await Promise.all([child(writer(1)), child(writer(101))]);
  const s = openState("f");
  const snap = s.snapshot();
  assert.equal(snap.targets.length, 80);
  s.close();
});

test("a reader in another process never sees half an update", async () => {
  initState({ ...base, name: "g", tableSize: 65537, maxTargets: 8 });
  const setA = [1, 2, 3];
  const setB = [4, 5, 6, 7];
  const tableA = buildMaglevTable(
    setA.map((fwmark) => ({ fwmark, weight: 1 })),
    65537,
  );
  const tableB = buildMaglevTable(
    setB.map((fwmark) => ({ fwmark, weight: 1 })),
    65537,
  );
  const s = openState("g");
  s.update((t) => activateTargets(t, setA, 1, 8));
  const reader = child(`
    const s = store.openState("g");
    const digests = new Set();
    const end = Date.now() + 1500;
    let reads = 0;
    while (Date.now() < end) {
      const snap = s.snapshot();
      let h = 0;
      for (let i = 0; i < snap.table.length; i++) h = (Math.imul(h, 31) + snap.table[i]) | 0;
      digests.add(h);
      reads++;
    }
    console.log(JSON.stringify({ digests: [...digests], reads }));`);
  const end = Date.now() + 1500;
  let flips = 0;
  while (Date.now() < end) {
    s.update((t) => {
      const activeA = t.some((x) => x.fwmark === 1 && x.active);
      if (activeA) {
        deactivateTargets(t, setA);
        activateTargets(t, setB, 1, 8);
      } else {
        if (t.some((x) => x.fwmark === 4)) deactivateTargets(t, setB);
        activateTargets(t, setA, 1, 8);
      }
    });
    flips++;
    await new Promise((r) => setImmediate(r));
  }
  const result = JSON.parse(await reader) as { digests: number[]; reads: number };
  const digest = (table: Uint32Array) => {
    let h = 0;
    for (let i = 0; i < table.length; i++) h = (Math.imul(h, 31) + table[i]) | 0;
    return h;
  };
  const allowed = new Set([digest(tableA), digest(tableB)]);
  assert.ok(flips > 10, `writer flipped ${flips} times`);
  assert.ok(result.reads > 10, `reader read ${result.reads} times`);
  for (const d of result.digests)
    assert.ok(allowed.has(d), "reader saw a table that was never published");
  // The reader really read while the writer changed the table: it saw both of them (a
  // reader that only ever saw one table would prove nothing about torn reads).
  assert.deepEqual(
    [...new Set(result.digests)].sort(),
    [...allowed].sort(),
    `reader saw ${result.digests.length} of the 2 tables in ${result.reads} reads`,
  );
  s.close();
});
