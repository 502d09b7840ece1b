// `nflb stats` as text: which queues it shows (not an earlier daemon's stopped queue that
// the current setup no longer uses) and every counter of a queue, fragments included;
// `nflb delete` takes the counters files of stopped queues with it.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { test } from "node:test";
import { currentQueues, queueLines } from "../../src/cli/inspect.js";
import { C, dropsByReason, mapCounters, type QueueCounters } from "../../src/dataplane/counters.js";
import type { SetupSpec } from "../../src/netfilter/index.js";
import { nflb, tempStateDir } from "../helpers/cli.js";

function queue(n: number, running: boolean, over: Partial<QueueCounters> = {}): QueueCounters {
  const zero = {
    firstSeen: 0,
    forwarded: 0,
    stored: 0,
    reinjected: 0,
    expiredEntries: 0,
    droppedExpired: 0,
    droppedPoolFull: 0,
    droppedTooBig: 0,
    droppedTableFull: 0,
    droppedPoisoned: 0,
    poisoned: 0,
    discardedPoisoned: 0,
    firstDuplicate: 0,
    laterSeen: 0,
    truncated: 0,
    reinjectErrors: 0,
    entries: 0,
    held: 0,
  };
  return {
    queue: n,
    pid: 1,
    running,
    startedAt: "",
    updatedAt: "",
    packets: 10,
    batches: 1,
    marked: 10,
    noTargetDropped: 0,
    noTargetMarked: 0,
    invalidDropped: 0,
    invalidAccepted: 0,
    sendErrors: 0,
    recvErrors: 0,
    tableChanges: 1,
    generation: 2,
    tableChangedAt: "",
    tierForwarded: 0,
    noFlowDropped: 0,
    noFlowMarked: 0,
    stateDamage: 0,
    flowsApplied: 1,
    flowsAppliedAt: "",
    flows: 0,
    largestPacket: 92,
    invalidByReason: {},
    fragments: zero,
    perSlot: [],
    ...over,
  };
}

const spec = (over: Partial<SetupSpec>): SetupSpec =>
  ({ name: "x", mode: "nat", queue: { first: 0, last: 1 }, ...over }) as SetupSpec;

test("an earlier daemon's stopped queue is not shown after a statistic-mode setup", () => {
  const qs = [queue(0, false), queue(7, true)];
  assert.deepEqual(
    currentQueues(qs, spec({ mode: "statistic" })).map((q) => q.queue),
    [7],
    "running queues are always shown",
  );
  assert.deepEqual(
    currentQueues(
      [queue(0, false), queue(5, false), queue(9, false)],
      spec({ fragments: { queue: 9, tun: "t" } }),
    ).map((q) => q.queue),
    [0, 9],
    "stopped queues of the current setup (range and fragment queue) keep their last counters",
  );
  assert.deepEqual(
    currentQueues(qs, undefined).map((q) => q.queue),
    [0, 7],
    "no setup record: everything",
  );
});

test("the text shows the fragment counters, even when the table only dropped", () => {
  const q = queue(9, true, {
    fragments: { ...queue(0, true).fragments, laterSeen: 5, droppedTableFull: 5 },
    invalidByReason: { 1: 3 },
    invalidDropped: 3,
    tierForwarded: 4,
  });
  const text = queueLines(q).join("\n");
  assert.match(text, /later 5/);
  assert.match(text, /table full 5/);
  assert.match(text, /invalid by reason: truncated 3/);
  assert.match(text, /handed to tier peers: 4/);
  assert.doesNotMatch(queueLines(queue(1, true)).join("\n"), /fragments/);
});

test("nflb delete removes the counters files of the load balancer's stopped queues", () => {
  const dirs = tempStateDir();
  try {
    const env = { NFLB_STATE_DIR: dirs.dir };
    assert.equal(nflb(["init", "--name", "gone"], env).status, 0);
    process.env.NFLB_STATE_DIR = dirs.dir;
    const w = mapCounters("gone", 3, 100);
    w[C.running] = 0;
    assert.ok(readdirSync(dirs.dir).includes("gone.q3.stats"));
    assert.equal(nflb(["delete", "--name", "gone"], env).status, 0);
    assert.deepEqual(
      readdirSync(dirs.dir).filter((f) => f.startsWith("gone")),
      [],
    );
  } finally {
    Reflect.deleteProperty(process.env, "NFLB_STATE_DIR");
    dirs.cleanup();
  }
});

test("drops by reason, for status and metrics", () => {
  const q = queue(1, true, {
    noTargetDropped: 1,
    noFlowDropped: 2,
    invalidDropped: 3,
    fragments: {
      ...queue(0, true).fragments,
      droppedTableFull: 4,
      droppedPoisoned: 1,
      truncated: 5,
      droppedExpired: 6,
    },
  });
  assert.deepEqual(dropsByReason(q), {
    "no-target": 1,
    "no-flow": 2,
    invalid: 3,
    "fragment-dropped": 5,
    "fragment-truncated": 5,
    "fragment-expired": 6,
  });
});
