// The trace ring: order, wrap-around of slots and of the 32-bit counters, a full ring
// drops and counts without waiting, truncation at a character boundary, and a real
// producer thread against a consumer.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Worker } from "node:worker_threads";
import { FLAG_TRUNCATED, TraceRing } from "../../src/trace/ring.js";

const all = () => true;

function collect(ring: TraceRing, max?: number): [number, string, number][] {
  const out: [number, string, number][] = [];
  ring.drain(all, (kind, text, flags) => out.push([kind, text, flags]), max);
  return out;
}

describe("trace ring", () => {
  test("records come out in order with their kind", () => {
    const ring = new TraceRing(TraceRing.allocate(8, 64));
    assert.equal(ring.write(1, "one"), true);
    assert.equal(ring.write(2, "two"), true);
    assert.equal(ring.write(5, ""), true);
    assert.deepEqual(collect(ring), [
      [1, "one", 0],
      [2, "two", 0],
      [5, "", 0],
    ]);
    assert.deepEqual(collect(ring), []);
    const s = ring.stats();
    assert.equal(s.written, 3);
    assert.equal(s.dropped, 0);
    assert.equal(s.pending, 0);
  });

  test("wraps around the slots many times, interleaving writes and reads", () => {
    const ring = new TraceRing(TraceRing.allocate(4, 32));
    let next = 0;
    let expected = 0;
    for (let round = 0; round < 1000; round++) {
      const writes = (round % 4) + 1;
      for (let i = 0; i < writes; i++) assert.equal(ring.write(next % 7, `r${next++}`), true);
      for (const [kind, text] of collect(ring, (round % 3) + 2)) {
        assert.equal(text, `r${expected}`);
        assert.equal(kind, expected % 7);
        expected++;
      }
      // never more than the ring holds: keep it from filling in this test
      for (const [, text] of collect(ring)) assert.equal(text, `r${expected++}`);
    }
    assert.equal(expected, next);
    assert.equal(ring.stats().dropped, 0);
  });

  test("the 32-bit counters wrap without losing the fill level", () => {
    const buffer = TraceRing.allocate(4, 32);
    const words = new Int32Array(buffer, 0, 48);
    // head and tail just below 2^32 (as int32: -2)
    words[0] = -2;
    words[16] = -2;
    const ring = new TraceRing(buffer);
    for (let i = 0; i < 4; i++) assert.equal(ring.write(0, `w${i}`), true);
    assert.equal(ring.write(0, "full"), false);
    assert.deepEqual(
      collect(ring).map(([, t]) => t),
      ["w0", "w1", "w2", "w3"],
    );
    assert.equal(ring.stats().written, 2);
    assert.equal(ring.stats().pending, 0);
  });

  test("a full ring drops and counts, never waits, and takes records again once read", () => {
    const ring = new TraceRing(TraceRing.allocate(16, 64));
    for (let i = 0; i < 16; i++) assert.equal(ring.write(1, `x${i}`), true);
    const t0 = process.hrtime.bigint();
    let refused = 0;
    for (let i = 0; i < 100_000; i++) if (!ring.write(1, "more")) refused++;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(refused, 100_000);
    assert.equal(ring.dropped(), 100_000);
    assert.ok(ms < 1000, `100k refused writes took ${ms} ms`);
    assert.equal(collect(ring, 3).length, 3);
    assert.equal(ring.write(1, "again"), true);
    const rest = collect(ring).map(([, t]) => t);
    assert.deepEqual(rest.slice(0, 2), ["x3", "x4"]);
    assert.equal(rest.at(-1), "again");
    assert.equal(rest.length, 14);
  });

  test("only wanted kinds are decoded; the others are consumed unread", () => {
    const ring = new TraceRing(TraceRing.allocate(8, 64));
    ring.write(1, "a");
    ring.write(2, "b");
    ring.write(1, "c");
    const seen: string[] = [];
    const asked: number[] = [];
    const n = ring.drain(
      (kind) => {
        asked.push(kind);
        return kind === 1;
      },
      (_k, text) => seen.push(text),
    );
    assert.equal(n, 3);
    assert.deepEqual(asked, [1, 2, 1]);
    assert.deepEqual(seen, ["a", "c"]);
    assert.equal(ring.stats().pending, 0);
  });

  test("a record longer than a slot is cut at a character boundary and flagged", () => {
    const ring = new TraceRing(TraceRing.allocate(4, 16)); // 12 bytes of text
    ring.write(3, "ééééééééé"); // 18 bytes
    ring.write(3, "exactly12byt");
    ring.write(3, "日本語です"); // 15 bytes
    const out = collect(ring);
    assert.deepEqual(out[0], [3, "éééééé", FLAG_TRUNCATED]);
    assert.deepEqual(out[1], [3, "exactly12byt", 0]);
    assert.deepEqual(out[2], [3, "日本語で", FLAG_TRUNCATED]);
    assert.equal(ring.stats().truncated, 2);
  });

  test("skipAll discards what waits", () => {
    const ring = new TraceRing(TraceRing.allocate(8, 32));
    ring.write(0, "old");
    ring.write(0, "older");
    assert.equal(ring.skipAll(), 2);
    ring.write(0, "new");
    assert.deepEqual(
      collect(ring).map(([, t]) => t),
      ["new"],
    );
  });

  test("bad geometry is refused", () => {
    assert.throws(() => TraceRing.allocate(1000, 512), /power of 2/);
    assert.throws(() => TraceRing.allocate(8, 10), /multiple of 4/);
    assert.throws(() => new TraceRing(new SharedArrayBuffer(256)), /not a trace ring/);
  });

  test("a producer thread and this consumer: every record read or counted dropped, in order", async () => {
    const buffer = TraceRing.allocate(64, 64);
    const ring = new TraceRing(buffer);
    const total = 200_000;
    const url = new URL("../../src/trace/ring.js", import.meta.url).href;
    const code = `
      const { workerData, parentPort } = require("node:worker_threads");
      import(${JSON.stringify(url)}).then(({ TraceRing }) => {
        const ring = new TraceRing(workerData.buffer);
        let written = 0;
        for (let i = 0; i < workerData.total; i++) if (ring.write(i & 7, "seq " + i)) written++;
        parentPort.postMessage(written);
      });
    `;
    const worker = new Worker(code, { eval: true, workerData: { buffer, total } });
    let written = -1;
    worker.on("message", (n: number) => {
      written = n;
    });
    const exited = new Promise((r) => worker.on("exit", r));
    let read = 0;
    let last = -1;
    const deadline = Date.now() + 30_000;
    const check = (kind: number, text: string) => {
      const seq = Number(text.slice(4));
      assert.ok(seq > last, `record ${seq} after ${last}`);
      assert.equal(kind, seq & 7);
      last = seq;
      read++;
    };
    while (written < 0 || ring.stats().pending > 0) {
      assert.ok(Date.now() < deadline, "producer did not finish");
      ring.drain(all, check);
      await new Promise((r) => setImmediate(r));
    }
    await exited;
    ring.drain(all, check);
    assert.equal(read, written);
    assert.equal(read + ring.dropped(), total);
  });
});
