// The data plane as a library (startDataplane), as `nflb run` will host it: one process
// serving the queues of two load balancers, real traffic to both, services added and
// removed while it runs, its queues and counters read through the handle, its log
// through the logger passed in, no signal handler of its own, a clean stop.
// The library runs in a child process inside the lb namespace (queues are per
// namespace); it follows commands on stdin and answers JSON lines on stdout.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { sendUdp } from "../helpers/udpsend.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const LIBRARY = fileURLToPath(new URL("../../src/dataplane/daemon.js", import.meta.url));
const PORT = 7171;
const VIP_A = "10.200.0.1";
const VIP_B = "10.200.0.2";

// The host: starts service "liba" (queues 51, 52), then obeys commands, one per line.
const HOST = `
import { createInterface } from "node:readline";
const { startDataplane } = await import(process.argv[2]);
const lines = [];
const log = Object.fromEntries(
  ["warning", "notice", "info", "debug"].map((l) => [l, (m) => lines.push(l + ": " + m)]),
);
const signalsBefore = process.listenerCount("SIGTERM") + process.listenerCount("SIGINT");
const say = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
const plane = await startDataplane({ services: [{ name: "liba", queues: [51, 52] }], log });
const view = () => ({
  queues: plane.queues().map((q) => ({ queue: q.queue, lb: q.lb, status: q.status, since: q.since })),
  counters: plane.counters().map((c) => ({ lb: c.lb, queue: c.queue, packets: c.packets, running: c.running })),
  signals: process.listenerCount("SIGTERM") + process.listenerCount("SIGINT") - signalsBefore,
  log: lines.splice(0),
});
say({ started: view() });
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "add") await plane.addService(cmd.service);
    if (cmd.op === "remove") await plane.removeService(cmd.name);
    if (cmd.op === "stop") {
      await plane.stop();
      say({ ok: true, code: await plane.done, ...view() });
      break;
    }
    say({ ok: true, ...view() });
  } catch (err) {
    say({ ok: false, error: err.message, ...view() });
  }
}
`;

interface View {
  ok?: boolean;
  error?: string;
  code?: number;
  queues: { queue: number; lb: string; status: string; since: string }[];
  counters: { lb: string; queue: number; packets: number; running: boolean }[];
  signals: number;
  log: string[];
}

describe("the data plane as a library: several load balancers in one process", { skip }, () => {
  let f: LbFixture;
  let host: ChildProcess;
  let answers: AsyncIterator<string>;
  const next = async (): Promise<View & { started?: View }> => {
    const r = await answers.next();
    assert.ok(!r.done, "the host answered");
    return JSON.parse(r.value);
  };
  const ask = async (cmd: object): Promise<View> => {
    host.stdin?.write(`${JSON.stringify(cmd)}\n`);
    return next();
  };

  before(async () => {
    f = LbFixture.create();
    await f.serveNames(PORT, (i) => [f.topology.targetAddrs[i].v4]);
    const a = f.topology.targetAddrs;
    for (const [name, vip, queue, targets] of [
      ["liba", VIP_A, "51:52", [`1=${a[0].v4}`, `2=${a[1].v4}`]],
      ["libb", VIP_B, "53", [`13=${a[2].v4}`]],
    ] as const) {
      f.nflb("init", "--name", name, "--M", "1009");
      f.setup(
        name,
        "--mode",
        "nat",
        "--vip",
        vip,
        "--queue",
        queue,
        ...targets.flatMap((t) => ["--target", t]),
      );
    }
    // A file, not -e: worker threads inherit the host's node flags (--input-type breaks them).
    const script = join(f.stateDir, "host.mjs");
    writeFileSync(script, HOST);
    host = f.topology.lb.spawn(process.execPath, [script, LIBRARY], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    f.onClose(() => host.kill("SIGKILL"));
    answers = createInterface({ input: host.stdout as NodeJS.ReadableStream })[
      Symbol.asyncIterator
    ]();
  });

  after(() => f?.close());

  test("starts with one service; logs through the logger given; installs no signal handler", async () => {
    const { started } = await next();
    assert.ok(started);
    assert.deepEqual(
      started.queues.map((q) => [q.queue, q.lb, q.status]),
      [
        [51, "liba", "serving"],
        [52, "liba", "serving"],
      ],
    );
    assert.ok(started.queues.every((q) => !Number.isNaN(Date.parse(q.since))));
    assert.equal(started.signals, 0);
    assert.ok(
      started.log.some((l) =>
        /^notice: load balancer "liba" \(M=1009, N=100\) serving queue\(s\) 51,52$/.test(l),
      ),
      started.log.join("\n"),
    );
  });

  test("adds a second load balancer's queue; traffic to both is served by their own targets", async () => {
    const added = await ask({ op: "add", service: { name: "libb", queues: [53] } });
    assert.equal(added.ok, true, added.error);
    assert.deepEqual(
      added.queues.map((q) => [q.queue, q.lb]),
      [
        [51, "liba"],
        [52, "liba"],
        [53, "libb"],
      ],
    );
    await sendUdp(f.topology.client, { host: VIP_A, port: PORT, count: 40, firstPort: 21000 });
    await sendUdp(f.topology.client, { host: VIP_B, port: PORT, count: 40, firstPort: 22000 });
    await new Promise((r) => setTimeout(r, 300));
    const v = await ask({ op: "noop" });
    const per = (lb: string) =>
      v.counters.filter((c) => c.lb === lb).reduce((n, c) => n + c.packets, 0);
    assert.ok(per("liba") >= 40, JSON.stringify(v.counters));
    assert.ok(per("libb") >= 40, JSON.stringify(v.counters));
    const stats = JSON.parse(f.nflb("stats", "--name", "libb", "--json"));
    assert.ok(
      stats.targets.some(
        (t: { fwmark: number; packets: number }) => t.fwmark === 13 && t.packets >= 40,
      ),
    );
  });

  test("refuses a queue served already and a load balancer that does not exist, changing nothing", async () => {
    const dup = await ask({ op: "add", service: { name: "libc", queues: [53] } });
    assert.equal(dup.ok, false);
    const none = await ask({ op: "add", service: { name: "nosuchlb", queues: [54] } });
    assert.equal(none.ok, false);
    assert.match(none.error ?? "", /no load balancer named "nosuchlb"/);
    assert.deepEqual(
      none.queues.map((q) => q.queue),
      [51, 52, 53],
    );
  });

  test("removes a service: its queue stops (its counters say so), the others keep serving", async () => {
    const removed = await ask({ op: "remove", name: "libb" });
    assert.equal(removed.ok, true, removed.error);
    assert.deepEqual(
      removed.queues.map((q) => q.queue),
      [51, 52],
    );
    const stats = JSON.parse(f.nflb("stats", "--name", "libb", "--json"));
    assert.equal(stats.queues.find((q: { queue: number }) => q.queue === 53)?.running, false);
    const before = removed.counters.reduce((n, c) => n + c.packets, 0);
    await sendUdp(f.topology.client, { host: VIP_A, port: PORT, count: 20, firstPort: 23000 });
    await new Promise((r) => setTimeout(r, 300));
    const v = await ask({ op: "noop" });
    assert.ok(v.counters.reduce((n, c) => n + c.packets, 0) >= before + 20, "liba still serves");
  });

  test("stop: every queue answers what it holds and stops; done says 0", async () => {
    const stopped = await ask({ op: "stop" });
    assert.equal(stopped.code, 0);
    assert.deepEqual(stopped.queues, []);
    assert.ok(
      stopped.log.some((l) => l === "info: all queues stopped"),
      stopped.log.join("\n"),
    );
  });
});
