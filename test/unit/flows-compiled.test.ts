// Flows compiled once and shared: a matcher that adopts compiled flows (in this thread or
// in a worker thread, through shared memory) answers exactly as one that compiled them;
// adopting costs a small fraction of compiling; the flows' --udpencap ports.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import {
  compileFlows,
  FlowError,
  FlowMatcher,
  type FlowSpec,
  parseFlow,
  sharedFlows,
} from "../../src/flows/index.js";
import { infoFromTuple, PacketInfo } from "../../src/packet/info.js";

const MATCHER = new URL("../../src/flows/matcher.js", import.meta.url).href;
const INFO = new URL("../../src/packet/info.js", import.meta.url).href;

/** 2,000 flows: services on /32s and /24s, port lists and ranges, and a catch-all. */
function manyFlows(n = 2000): FlowSpec[] {
  const flows: FlowSpec[] = [];
  for (let i = 0; i < n - 1; i++) {
    const host = `10.${64 + (i >> 8)}.${i & 255}.10`;
    const protocols = ["tcp", "udp", "tcp,udp", "sctp"][i % 4];
    const dports = i % 3 === 0 ? `${8000 + (i % 50) * 20}-${8019 + (i % 50) * 20}` : "80,443";
    flows.push(
      parseFlow({
        name: `svc${i}`,
        target: `lb${i % 5}`,
        protocols,
        dsts: host,
        dports,
        priority: n - i,
      }),
    );
  }
  flows.push(parseFlow({ name: "rest", target: "lb0", dsts: "10.0.0.0/8" }));
  return flows;
}

/** Packets as [proto, src, sport, dst, dport], many of them matching some flow. */
function packets(count: number): [string, string, number, string, number][] {
  const out: [string, string, number, string, number][] = [];
  for (let k = 0; k < count; k++) {
    const i = (k * 7919) % 2100;
    const proto = ["tcp", "udp", "sctp", "icmp"][k % 4];
    const dst = `10.${64 + (i >> 8)}.${i & 255}.10`;
    const dport = [80, 443, 8000 + (k % 1000), 53][k % 4];
    out.push([proto, `192.0.2.${k & 255}`, 1024 + k, dst, dport]);
  }
  return out;
}

function answers(m: FlowMatcher, list: ReturnType<typeof packets>): number[] {
  const info = new PacketInfo();
  const opts = { sctpPortsOnly: true, sctpEncapPort: 0 };
  return list.map(([p, s, sp, d, dp]) => {
    infoFromTuple(p, s, sp, d, dp, opts, info);
    return m.match(info, new Uint8Array(0));
  });
}

test("a matcher adopting compiled flows answers as one that compiled them", () => {
  const flows = manyFlows();
  const list = packets(20_000);
  const direct = new FlowMatcher(flows);
  const compiled = compileFlows(flows);
  const adopted = new FlowMatcher(sharedFlows(compiled));
  const expected = answers(direct, list);
  assert.ok(expected.filter((f) => f >= 0).length > 5000, "many packets match some flow");
  assert.deepEqual(answers(adopted, list), expected);
  assert.deepEqual(adopted.flows, direct.flows);
  assert.deepEqual([...adopted.hashOnAddresses], [...direct.hashOnAddresses]);
  assert.equal(adopted.indexOf("rest"), direct.indexOf("rest"));
});

test("sharedFlows puts every array in shared memory; a worker thread adopts it and agrees", async () => {
  const flows = manyFlows();
  const shared = sharedFlows(compileFlows(flows));
  for (const [key, value] of Object.entries(shared)) {
    if (ArrayBuffer.isView(value)) {
      assert.ok(value.buffer instanceof SharedArrayBuffer, `${key} is in shared memory`);
    }
  }
  const list = packets(5000);
  const code = `
    const { parentPort, workerData } = require("node:worker_threads");
    (async () => {
      const { FlowMatcher } = await import(workerData.matcher);
      const { PacketInfo, infoFromTuple } = await import(workerData.info);
      const m = new FlowMatcher(workerData.compiled);
      const info = new PacketInfo();
      const opts = { sctpPortsOnly: true, sctpEncapPort: 0 };
      const out = workerData.list.map(([p, s, sp, d, dp]) => {
        infoFromTuple(p, s, sp, d, dp, opts, info);
        return m.match(info, new Uint8Array(0));
      });
      parentPort.postMessage(out);
    })();`;
  const worker = new Worker(code, {
    eval: true,
    workerData: { matcher: MATCHER, info: INFO, compiled: shared, list },
  });
  const fromWorker = await new Promise<number[]>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  await worker.terminate();
  assert.deepEqual(fromWorker, answers(new FlowMatcher(flows), list));
});

test("adopting 2,000 compiled flows costs a small fraction of compiling them", (t) => {
  const flows = manyFlows();
  const time = (fn: () => void) => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  };
  const compileMs: number[] = [];
  const adoptMs: number[] = [];
  let compiled = compileFlows(flows);
  for (let i = 0; i < 3; i++) {
    compileMs.push(time(() => (compiled = compileFlows(flows))));
    adoptMs.push(time(() => new FlowMatcher(compiled)));
  }
  const median = (a: number[]) => a.sort((x, y) => x - y)[1];
  t.diagnostic(
    `compile ${median(compileMs).toFixed(1)} ms, adopt ${median(adoptMs).toFixed(3)} ms`,
  );
  assert.ok(median(adoptMs) * 20 < median(compileMs), `${adoptMs} vs ${compileMs}`);
});

test("--udpencap: the flows' SCTP-over-UDP ports; a UDP flow on such a port is refused", () => {
  const m = new FlowMatcher([
    parseFlow({ name: "sig", target: "a", protocols: "sctp", udpencap: 9899 }),
    parseFlow({ name: "sig2", target: "a", protocols: "udp,sctp", udpencap: 9900, dports: "3868" }),
    parseFlow({ name: "dns", target: "b", protocols: "udp", dports: "53" }),
  ]);
  assert.deepEqual([...m.encapPorts], [9899, 9900]);
  assert.throws(
    () =>
      new FlowMatcher([
        parseFlow({ name: "sig", target: "a", protocols: "sctp", udpencap: 9899 }),
        parseFlow({ name: "media", target: "b", protocols: "udp", dports: "9000-9999" }),
      ]),
    (e: unknown) =>
      e instanceof FlowError &&
      /flow "media" takes UDP port 9899, which flow "sig" makes SCTP over UDP/.test(e.message),
  );
  // Any UDP port (no dports) is fine: that flow keeps the other ports.
  new FlowMatcher([
    parseFlow({ name: "sig", target: "a", protocols: "sctp", udpencap: 9899 }),
    parseFlow({ name: "media", target: "b", protocols: "udp" }),
  ]);
});
