// A queue's worker without the queue: batches of crafted packets through QueueWorker's
// batch handler, its verdicts and counters checked, and `nflb fwmark`'s answer (askFwmark)
// compared with what the worker decided. Needs the addon (state files), not root.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { askFwmark } from "../../src/dataplane/ask.js";
import { C } from "../../src/dataplane/counters.js";
import { QueueWorker, type WorkerMessage } from "../../src/dataplane/queueworker.js";
import { compileFlows, parseFlow } from "../../src/flows/index.js";
import { PacketArrays } from "../../src/nfqueue/codec.js";
import { QUEUE_DEFAULTS, type VerdictWriter } from "../../src/nfqueue/queue.js";
import { updateFlows } from "../../src/state/flowstore.js";
import { nflb, tempStateDir } from "../helpers/cli.js";
import { ipPacket, PROTO_TCP, tcpSegment } from "../helpers/craft.js";

const VIP = "10.200.0.1";
const dirs = tempStateDir();

/** Verdicts as the worker gave them: [id, "accept" | "drop" | "unmarked", mark]. */
class Verdicts implements VerdictWriter {
  readonly given: [number, string, number][] = [];
  accept(id: number, mark: number): void {
    this.given.push([id, "accept", mark]);
  }
  acceptUnmarked(id: number): void {
    this.given.push([id, "unmarked", 0]);
  }
  drop(id: number): void {
    this.given.push([id, "drop", 0]);
  }
}

/** One batch of packets laid out as the queue's receive buffer would hold them. */
function batchOf(packets: Uint8Array[], copy = 256): PacketArrays {
  const buf = new Uint8Array(packets.length * 512);
  const b = new PacketArrays(packets.length, buf);
  packets.forEach((p, i) => {
    const len = Math.min(p.length, copy);
    buf.set(p.subarray(0, len), i * 512);
    b.ids[i] = 100 + i;
    b.payloadOffset[i] = i * 512;
    b.payloadLength[i] = len;
    b.origLength[i] = p.length;
  });
  b.count = packets.length;
  return b;
}

const syn = (sport: number, dport: number, dst = VIP) =>
  ipPacket("10.100.1.10", dst, PROTO_TCP, tcpSegment(sport, dport));

describe("QueueWorker", () => {
  let w: QueueWorker;
  const messages: WorkerMessage[] = [];

  before(() => {
    process.env.NFLB_STATE_DIR = dirs.dir;
    const env = { NFLB_STATE_DIR: dirs.dir };
    for (const [name, marks] of [
      ["qw", ["1", "2", "3"]],
      ["qwapi", ["11", "12"]],
    ] as const) {
      assert.equal(nflb(["init", "--name", name, "--M", "1009"], env).status, 0);
      assert.equal(nflb(["activate", "--name", name, ...marks], env).status, 0);
    }
    w = new QueueWorker(
      {
        name: "qw",
        queue: { ...QUEUE_DEFAULTS, queue: 900 },
        notargetsFwmark: 0,
        acceptInvalid: false,
        nolbFwmark: 0,
        promiscuousPing: false,
      },
      (m) => messages.push(m),
    );
  });

  after(() => {
    w?.close();
    dirs.cleanup();
  });

  test("each packet gets the verdict decide() gave it; counters follow the reasons", () => {
    const v = new Verdicts();
    const packets = [syn(2000, 80), syn(2001, 80), Uint8Array.of(0x45, 0, 0)];
    w.onBatch(batchOf(packets), v);
    assert.deepEqual(
      v.given.map(([id, kind]) => [id, kind]),
      [
        [100, "accept"],
        [101, "accept"],
        [102, "drop"],
      ],
    );
    for (const [i, sport] of [2000, 2001].entries()) {
      const answer = askFwmark(
        { proto: "tcp", src: "10.100.1.10", sport, dst: VIP, dport: 80 },
        { name: "qw" },
      );
      assert.equal(v.given[i][2], answer.fwmark, "nflb fwmark agrees with the worker");
      assert.equal(answer.lb, "qw");
    }
    const c = w.counters;
    assert.equal(c[C.packets], 3);
    assert.equal(c[C.marked], 2);
    assert.equal(c[C.invalidDropped], 1);
    const perSlot = Array.from(c.subarray(C.perSlot, C.perSlot + 3)).reduce((a, b) => a + b, 0);
    assert.equal(perSlot, 2, "per-target counters add up to the marked packets");
  });

  test("flows: port 80 moves to another load balancer, and nflb fwmark says so too", () => {
    const specs = [
      parseFlow({ name: "api", target: "qwapi", protocols: "tcp", dports: "80", priority: 5 }),
      parseFlow({ name: "rest", target: "qw", protocols: "tcp" }),
    ];
    // The daemon's main thread compiles and stores; the worker adopts between batches.
    updateFlows(() => specs);
    const applied = w.counters[C.flowsApplied];
    w.applyFlows(compileFlows(specs));
    assert.equal(w.counters[C.flowsApplied], applied + 1);
    assert.equal(w.counters[C.flows], 2);
    const v = new Verdicts();
    const ports = Array.from({ length: 40 }, (_, i) => 3000 + i);
    w.onBatch(batchOf(ports.map((p) => syn(p, 80))), v);
    const fwmarks = v.given.map(([, , mark]) => mark);
    assert.ok(
      fwmarks.every((m) => m === 11 || m === 12),
      `every port-80 packet to qwapi: ${fwmarks}`,
    );
    for (const [i, sport] of ports.entries()) {
      const answer = askFwmark(
        { proto: "tcp", src: "10.100.1.10", sport, dst: VIP, dport: 80 },
        { name: "qw" },
      );
      assert.equal(answer.fwmark, fwmarks[i], `flow from port ${sport}`);
      assert.equal(answer.flow, "api");
      assert.equal(answer.lb, "qwapi");
    }
    assert.equal(w.counters[C.marked], 2 + 40);
    const other = new Verdicts();
    w.onBatch(batchOf([syn(4000, 22, "10.201.0.1")]), other);
    assert.equal(other.given[0][1], "accept", "the rest flow (own load balancer)");
    updateFlows(() => []);
    w.applyFlows(null);
  });
});
