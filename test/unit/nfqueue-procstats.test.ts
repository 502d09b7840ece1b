import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseQueueProcStats, readQueueProcStats } from "../../src/nfqueue/procstats.js";

// Two lines exactly as seq_show() prints them: "%5u %6u %5u %1u %5u %5u %5u %8u %2d\n"
const SAMPLE =
  "    3   4021     7 2   256     0    12     5000  1\n" +
  "65535 -1234567     0 2 65531 99999     0        0  1\n" +
  "    0 2147483647     0 1   128     1     2 4294967295  1\n";

test("parses /proc/net/netfilter/nfnetlink_queue columns in kernel order", () => {
  const s = parseQueueProcStats(SAMPLE);
  assert.equal(s.length, 3);
  // old kernels printed the port with %d: read back as the u32 the socket reports
  assert.equal(s[1].portId, -1234567 >>> 0);
  assert.deepEqual(
    [s[0], s[2]],
    [
      {
        queue: 3,
        portId: 4021,
        queueTotal: 7,
        copyMode: 2,
        copyRange: 256,
        queueDropped: 0,
        userDropped: 12,
        idSequence: 5000,
      },
      {
        queue: 0,
        portId: 2147483647,
        queueTotal: 0,
        copyMode: 1,
        copyRange: 128,
        queueDropped: 1,
        userDropped: 2,
        idSequence: 4294967295,
      },
    ],
  );
});

test("empty text and garbage give no entries", () => {
  assert.deepEqual(parseQueueProcStats(""), []);
  assert.deepEqual(parseQueueProcStats("hello world\n1 2 3\n"), []);
});

test("a missing file reads as no queues; an existing one is parsed", () => {
  const dir = mkdtempSync(join(tmpdir(), "nflb-procstats-"));
  try {
    assert.deepEqual(readQueueProcStats(join(dir, "nope")), []);
    const f = join(dir, "q");
    writeFileSync(f, SAMPLE);
    assert.equal(readQueueProcStats(f).length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
