// The main thread's trace hub with stand-in sockets: the mask is the union of the
// tracers' selections, each tracer gets its kinds in its format, a tracer that does not
// read loses lines (counted, then told) without holding up the others, ring drops are
// reported.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TraceHub, type TraceSink } from "../../src/trace/hub.js";
import { Kind, TraceBit } from "../../src/trace/kinds.js";
import { flowConfJson } from "../../src/trace/record.js";
import { TraceRing } from "../../src/trace/ring.js";

class Sink implements TraceSink {
  data = "";
  /** Bytes the stand-in pretends are still waiting in the socket. */
  stuck = 0;
  write(data: string): boolean {
    this.data += data;
    return true;
  }
  get writableLength(): number {
    return this.stuck;
  }
  lines(): string[] {
    return this.data.split("\n").filter((l) => l !== "");
  }
}

const packet = (i: number) =>
  `{"ts":1,"kind":"packet","queue":0,"family":4,"proto":"udp","src":"10.0.0.1","dst":"10.0.0.2","sport":${i},"dport":53,"hash":"5-tuple","traceFlow":"all","flow":null,"lb":"x","target":1,"fwmark":1,"verdict":"accept","reason":null}`;

describe("trace hub", () => {
  test("the shared mask is the union of the attached tracers' selections", () => {
    const hub = new TraceHub({ drainMs: 1000 });
    const word = new Int32Array(hub.maskBuffer);
    const a = hub.attach(new Sink(), TraceBit.log, false);
    assert.equal(Atomics.load(word, 0), TraceBit.log);
    const b = hub.attach(new Sink(), TraceBit.packet | TraceBit.sctp, true);
    assert.equal(Atomics.load(word, 0), TraceBit.log | TraceBit.packet | TraceBit.sctp);
    hub.detach(a);
    assert.equal(Atomics.load(word, 0), TraceBit.packet | TraceBit.sctp);
    hub.detach(b);
    hub.detach(b);
    assert.equal(Atomics.load(word, 0), 0);
    assert.throws(() => hub.attach(new Sink(), 0, false), /bad trace mask/);
    hub.close();
  });

  test("each tracer gets the kinds it selected, as text or JSON", () => {
    const hub = new TraceHub({ drainMs: 1000 });
    const ring = new TraceRing(hub.addRing(7));
    const text = new Sink();
    const json = new Sink();
    const logs = new Sink();
    hub.attach(text, TraceBit.packet, false);
    hub.attach(json, TraceBit.packet | TraceBit.flowConf, true);
    hub.attach(logs, TraceBit.log, false);
    ring.write(Kind.packet, packet(1000));
    ring.write(Kind.frag, '{"kind":"frag"}'); // nobody selected it
    hub.event(Kind.flowConf, flowConfJson(1, 7, "flows", ["a"]));
    hub.log("debug", "hello");
    hub.tick();
    assert.deepEqual(text.lines(), [
      "packet q0 udp 10.0.0.1:1000 -> 10.0.0.2:53 (5-tuple) lb=x target=1 fwmark=1 trace-flow=all",
    ]);
    assert.deepEqual(
      json.lines().map((l) => JSON.parse(l).kind),
      ["flow-conf", "packet"],
    );
    assert.equal(logs.lines().length, 1);
    assert.match(logs.lines()[0], /^log debug: hello$/);
    assert.equal(ring.stats().pending, 0);
    hub.close();
  });

  test("a tracer that does not read loses lines, counted, and is told when it catches up", () => {
    const hub = new TraceHub({ drainMs: 1000, tracerLimitBytes: 65536 });
    const ring = new TraceRing(hub.addRing(0));
    const slow = new Sink();
    const fast = new Sink();
    const tSlow = hub.attach(slow, TraceBit.packet, false);
    const tFast = hub.attach(fast, TraceBit.packet, true);
    slow.stuck = 100_000; // over the limit
    for (let i = 0; i < 100; i++) ring.write(Kind.packet, packet(i));
    hub.tick();
    assert.equal(slow.data, "");
    assert.equal(tSlow.dropped, 100);
    assert.equal(fast.lines().length, 100);
    assert.equal(tFast.dropped, 0);
    // It reads again: told how many it lost, then gets lines again.
    slow.stuck = 0;
    ring.write(Kind.packet, packet(5000));
    hub.tick();
    assert.deepEqual(slow.lines()[0], "100 trace lines dropped");
    assert.match(slow.lines()[1], /:5000 ->/);
    const status = hub.status();
    assert.deepEqual(
      status.tracers.map((t) => [t.id, t.dropped]),
      [
        [tSlow.id, 100],
        [tFast.id, 0],
      ],
    );
    hub.close();
  });

  test("lines that would overflow the limit within one drain are dropped too", () => {
    const hub = new TraceHub({ drainMs: 1000, tracerLimitBytes: 2000 });
    const ring = new TraceRing(hub.addRing(0));
    const sink = new Sink();
    const t = hub.attach(sink, TraceBit.packet, true);
    for (let i = 0; i < 50; i++) ring.write(Kind.packet, packet(i));
    hub.drain();
    assert.ok(t.lines > 0 && t.lines < 50, `${t.lines} lines`);
    assert.equal(t.lines + t.dropped, 50);
    hub.close();
  });

  test("a full ring is reported to the tracers of per-packet kinds", () => {
    const hub = new TraceHub({ drainMs: 1000, ringSlots: 4 });
    const ring = new TraceRing(hub.addRing(3));
    const sink = new Sink();
    hub.attach(sink, TraceBit.packet, false);
    for (let i = 0; i < 10; i++) ring.write(Kind.packet, packet(i));
    hub.tick();
    const lines = sink.lines();
    assert.equal(lines.length, 5);
    assert.equal(lines[4], "6 trace records dropped in queue 3 (trace ring full)");
    hub.close();
  });

  test("records left from before the first tracer attached are not delivered", () => {
    const hub = new TraceHub({ drainMs: 1000 });
    const ring = new TraceRing(hub.addRing(0));
    ring.write(Kind.packet, packet(1));
    const sink = new Sink();
    hub.attach(sink, TraceBit.packet, true);
    ring.write(Kind.packet, packet(2));
    hub.tick();
    assert.equal(sink.lines().length, 1);
    assert.equal(JSON.parse(sink.lines()[0]).sport, 2);
    hub.close();
  });
});
