// The corruption matrix without a daemon: every header word, every stamp word of the
// active buffer, target words, random table bytes, the inactive buffer, a zeroed,
// truncated or old-version file. For each: do readers notice (CLI: one error that names
// the damage; a daemon's view: keeps its table, counts one episode), what does
// `nflb init --force` (repairState) recover, and does `nflb delete` remove it.
import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { LbView } from "../../src/dataplane/lbview.js";
import {
  B,
  bufferOffset,
  H,
  HEADER_WORDS,
  STAMP_WORDS,
  type StateGeometry,
  TARGET_WORDS,
  tableStart,
} from "../../src/state/layout.js";
import { repairState } from "../../src/state/repair.js";
import {
  activateTargets,
  deactivateTargets,
  deleteState,
  initState,
  openState,
  StateDamageError,
  statePath,
  stateProblem,
} from "../../src/state/store.js";
import { tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
before(() => {
  process.env.NFLB_STATE_DIR = dirs.dir;
});
after(() => dirs.cleanup());

const NAME = "m";
const G: StateGeometry = { tableSize: 1009, maxTargets: 8 };
const DEFAULTS = {
  tableSize: 997,
  maxTargets: 16,
  ownFwmark: 0,
  hashSeed: 0,
  sctpPortsOnly: true,
  sctpEncapPort: 0,
};

/** Generation 3: targets 1, 2, 3 activated (gen 2), 2 deactivated (gen 3). */
function makeState(): Buffer {
  deleteState(NAME);
  initState({
    ...DEFAULTS,
    name: NAME,
    tableSize: G.tableSize,
    maxTargets: G.maxTargets,
    hashSeed: 7,
  });
  const s = openState(NAME);
  s.update((t) => activateTargets(t, [1, 2, 3], 1, G.maxTargets));
  s.update((t) => deactivateTargets(t, [2]));
  assert.equal(s.generation(), 3);
  s.close();
  return readFileSync(statePath(NAME));
}

const ACTIVE = 3 & 1;
const INACTIVE = 1 - ACTIVE;
const word = (buffer: number, w: number) => bufferOffset(G, buffer) + w * 4;

type Where = "header" | "active buffer" | "inactive buffer" | "file";
interface Case {
  what: string;
  where: Where;
  /** Damages the file in place (same inode, as a stray write would). */
  damage: (path: string) => void;
  /** Readers notice it. */
  detected: boolean;
  /** What init --force recovers: the published targets, the previous ones, none. */
  repair: "published targets" | "previous targets" | "nothing (defaults)" | "n/a";
}

function flipWord(offset: number): (path: string) => void {
  return (path) => {
    const fd = openSync(path, "r+");
    const b = Buffer.alloc(4);
    const cur = readFileSync(path).readUInt32LE(offset);
    b.writeUInt32LE((cur ^ 0x5a5a5a5a) >>> 0);
    writeSync(fd, b, 0, 4, offset);
    closeSync(fd);
  };
}

function randomBytes(offset: number, span: number, count: number): (path: string) => void {
  return (path) => {
    const fd = openSync(path, "r+");
    let seed = 12345;
    const rnd = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    for (let i = 0; i < count; i++) {
      writeSync(fd, Buffer.from([rnd() & 0xff]), 0, 1, offset + (rnd() % span));
    }
    closeSync(fd);
  };
}

const HEADER_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(H).map(([k, v]) => [v, k]),
);
const STAMP_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(B).map(([k, v]) => [v, k]),
);

export const CASES: Case[] = [
  ...Array.from(
    { length: HEADER_WORDS },
    (_, w): Case => ({
      what: `header word ${w}${HEADER_NAMES[w] ? ` (${HEADER_NAMES[w]})` : " (reserved)"}`,
      where: "header",
      damage: flipWord(w * 4),
      // The log level is outside the checksum: readers range-check it (a bad one is ignored).
      detected: w !== H.logLevel,
      repair:
        w === H.logLevel ? "n/a" : w === H.generation ? "published targets" : "published targets",
    }),
  ),
  ...Array.from(
    { length: STAMP_WORDS },
    (_, w): Case => ({
      what: `active stamp word ${w}${STAMP_NAMES[w] ? ` (${STAMP_NAMES[w]})` : " (reserved)"}`,
      where: "active buffer",
      damage: flipWord(word(ACTIVE, w)),
      detected: true,
      // The table checksum covers only the table: the targets still verify.
      repair: w === B.tableChecksum ? "published targets" : "previous targets",
    }),
  ),
  ...[0, 1, 2, 3].map(
    (w): Case => ({
      what: `target slot 0 word ${w}`,
      where: "active buffer",
      damage: flipWord(word(ACTIVE, STAMP_WORDS + w)),
      detected: true,
      repair: "previous targets",
    }),
  ),
  {
    what: "an unused target slot",
    where: "active buffer",
    damage: flipWord(word(ACTIVE, STAMP_WORDS + 7 * TARGET_WORDS)),
    detected: true,
    repair: "previous targets",
  },
  {
    what: "100 random bytes in the table",
    where: "active buffer",
    damage: randomBytes(word(ACTIVE, tableStart(G)), G.tableSize * 4, 100),
    detected: true,
    repair: "published targets",
  },
  {
    what: "100 random bytes anywhere in the inactive buffer",
    where: "inactive buffer",
    damage: randomBytes(bufferOffset(G, INACTIVE), bufferOffset(G, 1) - bufferOffset(G, 0), 100),
    // Not published: never read, overwritten by the next change.
    detected: false,
    repair: "n/a",
  },
  {
    what: "the whole file zeroed",
    where: "file",
    damage: (path) => writeFileSync(path, Buffer.alloc(readFileSync(path).length)),
    detected: true,
    repair: "nothing (defaults)",
  },
  {
    what: "the header zeroed",
    where: "header",
    damage: (path) => {
      const fd = openSync(path, "r+");
      writeSync(fd, Buffer.alloc(256), 0, 256, 0);
      closeSync(fd);
    },
    detected: true,
    repair: "published targets",
  },
];

describe("corruption matrix, no daemon", () => {
  let good: Buffer;
  let goodTable: Uint16Array;

  before(() => {
    good = makeState();
    const v = new LbView(openState(NAME));
    v.refresh();
    goodTable = v.slotTable.slice();
  });

  for (const c of CASES) {
    test(`${c.where}: ${c.what}`, () => {
      const path = statePath(NAME);
      writeFileSync(path, good);
      // A daemon's view with a good copy, then the damage.
      const state = openState(NAME);
      const view = new LbView(state);
      assert.ok(view.refresh(), "first copy");
      c.damage(path);

      // CLI readers: one error naming the damage, or nothing.
      const problem = stateProblem(NAME);
      assert.equal(problem !== undefined, c.detected, `CLI readers: ${problem}`);
      if (c.detected) {
        assert.throws(
          () => {
            const s = openState(NAME);
            try {
              s.snapshot();
            } finally {
              s.close();
            }
          },
          (err: unknown) =>
            err instanceof StateDamageError &&
            !err.message.includes("\n") &&
            /nflb init --force --name m/.test(err.message),
        );
      }

      // The daemon's view: a refresh (if the generation moved) and audits.
      if (view.stale()) assert.equal(view.refresh(), undefined, "a damaged copy is not taken");
      view.audit();
      view.audit();
      assert.equal(view.damageCount, c.detected ? 1 : 0, "one episode, counted once");
      assert.equal(view.damaged, c.detected);
      assert.deepEqual(view.slotTable, goodTable, "the last good table stays in use");
      assert.equal(view.stale(), false, "a damaged generation is not copied again and again");

      // The episode ends when the state verifies again; new damage is a new episode.
      writeFileSync(path, good);
      if (view.stale()) view.refresh();
      view.audit();
      assert.equal(view.damaged, false, "episode over");
      if (c.detected) {
        c.damage(path);
        if (view.stale()) view.refresh();
        view.audit();
        assert.equal(view.damageCount, 2, "a second episode");
      }
      state.close();

      // init --force
      if (c.repair !== "n/a") {
        const r = repairState(NAME, {}, DEFAULTS);
        assert.equal(r.damage !== undefined, true);
        const s = openState(NAME);
        const snap = s.snapshot();
        s.close();
        const actives = snap.targets.filter((t) => t.active).map((t) => t.fwmark);
        const expected = {
          "published targets": [1, 3],
          "previous targets": [1, 2, 3],
          "nothing (defaults)": [],
        }[c.repair];
        assert.deepEqual(actives, expected, `recovered ${JSON.stringify(r.recovered)}`);
        if (c.repair !== "nothing (defaults)") {
          assert.equal(s.config.tableSize, G.tableSize, "settings recovered");
          assert.equal(s.config.hashSeed, 7, "seed recovered");
        }
      }
      // delete removes whatever is there.
      assert.equal(deleteState(NAME), true);
    });
  }

  test("a truncated file and a file of an older version: clear damage, delete and repair work", () => {
    writeFileSync(statePath(NAME), good);
    truncateSync(statePath(NAME), 100);
    assert.match(stateProblem(NAME) ?? "", /too small \(100 bytes\)/);
    assert.equal(repairState(NAME, {}, DEFAULTS).recovered, undefined);
    assert.equal(stateProblem(NAME), undefined, "repaired: a fresh, empty state");
    const v1 = Buffer.from(good);
    v1.writeUInt32LE(1, H.version * 4);
    writeFileSync(statePath(NAME), v1);
    assert.match(stateProblem(NAME) ?? "", /state version 1 .*reads version 2/);
    assert.equal(deleteState(NAME), true);
    assert.equal(stateProblem(NAME), undefined);
  });

  test("init --force on a healthy state with other settings keeps the targets", () => {
    writeFileSync(statePath(NAME), good);
    const r = repairState(NAME, { tableSize: 2003 }, DEFAULTS);
    assert.equal(r.damage, undefined);
    assert.equal(r.recovered?.targets, 3);
    const s = openState(NAME);
    assert.equal(s.config.tableSize, 2003);
    assert.deepEqual(
      s
        .snapshot()
        .targets.filter((t) => t.active)
        .map((t) => t.fwmark),
      [1, 3],
    );
    s.close();
    assert.equal(repairState(NAME, {}, DEFAULTS).unchanged, true, "same again: nothing to do");
  });
});
