// NfQueue.open argument checks: they run before any syscall, so no root is needed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NfQueue, QUEUE_DEFAULTS } from "../../src/nfqueue/queue.js";

test("out-of-range options are rejected with a message naming the option", () => {
  const cases: [Parameters<typeof NfQueue.open>[0], RegExp][] = [
    [{ queue: 65536 }, /queue must be an integer in \[0, 65535\], got 65536/],
    [{ queue: -1 }, /queue must be an integer/],
    [{ queue: 1.5 }, /queue must be an integer/],
    [{ queue: 1, maxLen: 65537 }, /maxLen must be an integer in \[1, 65536\]/],
    [{ queue: 1, maxLen: 0 }, /maxLen/],
    [{ queue: 1, copyRange: 70000 }, /copyRange must be an integer in \[1, 65531\]/],
    [{ queue: 1, copyRange: 0 }, /copyRange/],
    [{ queue: 1, batchSize: 1025 }, /batchSize must be an integer in \[1, 1024\]/],
    [{ queue: 1, rcvbufBytes: -5 }, /rcvbufBytes/],
  ];
  for (const [opts, re] of cases) {
    assert.throws(
      () => NfQueue.open(opts),
      (err: Error) => err instanceof RangeError && re.test(err.message),
    );
  }
});

test("defaults follow the measured guidance", () => {
  assert.equal(QUEUE_DEFAULTS.copyRange, 256);
  assert.equal(QUEUE_DEFAULTS.batchSize, 64);
  assert.equal(QUEUE_DEFAULTS.rcvbufBytes, 32 * 1024 * 1024);
  assert.ok(QUEUE_DEFAULTS.maxLen <= 65536);
});
