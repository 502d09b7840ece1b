// Control requests, trace selections and masks, record formatting, host:port parsing.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  classify,
  defaultClassifyOptions,
  infoFromTuple,
  PacketInfo,
} from "../../src/packet/index.js";
import { formatRecord, formatRecordJson } from "../../src/trace/format.js";
import {
  ALL_TRACE_BITS,
  parseMask,
  parseSelection,
  selectionOf,
  TraceBit,
} from "../../src/trace/kinds.js";
import { isLoopbackHost, parseHostPort } from "../../src/trace/paths.js";
import { parseRequest, traceRequestLine } from "../../src/trace/protocol.js";
import {
  droppedJson,
  flowConfJson,
  logJson,
  type PacketRecord,
  packetJson,
  targetJson,
} from "../../src/trace/record.js";

describe("trace selections and masks", () => {
  test("names and masks", () => {
    assert.equal(parseSelection("log"), TraceBit.log);
    assert.equal(parseSelection("packet, log"), TraceBit.packet | TraceBit.log);
    assert.equal(
      parseSelection(["log", "packet", "frag", "flow-conf", "sctp", "target"]),
      ALL_TRACE_BITS,
    );
    assert.deepEqual(selectionOf(0x3), ["log", "packet"]);
    assert.equal(parseMask("0x3f"), 0x3f);
    assert.equal(parseMask("2"), 2);
    assert.equal(parseMask(0x21), 0x21);
  });

  test("bad ones are refused with the reason", () => {
    assert.throws(() => parseSelection("log,pakcet"), /unknown trace selection "pakcet"/);
    assert.throws(() => parseSelection("log,"), /unknown trace selection ""/);
    assert.throws(() => parseSelection([]), /empty selection/);
    assert.throws(() => parseMask("0x40"), /invalid trace mask/);
    assert.throws(() => parseMask("0"), /invalid trace mask/);
    assert.throws(() => parseMask("xyz"), /invalid trace mask/);
    assert.throws(() => parseMask(1.5), /invalid trace mask/);
  });
});

describe("control requests", () => {
  test("trace, ping, status", () => {
    assert.deepEqual(parseRequest('{"op":"trace","selection":["packet","log"],"json":true}'), {
      op: "trace",
      mask: TraceBit.packet | TraceBit.log,
      json: true,
    });
    assert.deepEqual(parseRequest('{"op":"trace","selection":"sctp,target"}'), {
      op: "trace",
      mask: TraceBit.sctp | TraceBit.target,
      json: false,
    });
    assert.deepEqual(parseRequest('{"op":"trace","mask":"0x4"}'), {
      op: "trace",
      mask: TraceBit.frag,
      json: false,
    });
    assert.deepEqual(parseRequest('{"op":"trace"}'), {
      op: "trace",
      mask: TraceBit.log,
      json: false,
    });
    assert.deepEqual(parseRequest('{"op":"ping"}'), { op: "ping" });
    assert.deepEqual(parseRequest(' {"op":"status"} '), { op: "status" });
  });

  test("what nflb trace sends parses back to the same request", () => {
    const line = traceRequestLine(TraceBit.packet | TraceBit.frag, true);
    assert.ok(line.endsWith("\n"));
    assert.deepEqual(parseRequest(line.trim()), {
      op: "trace",
      mask: TraceBit.packet | TraceBit.frag,
      json: true,
    });
  });

  test("bad requests are refused with a reason", () => {
    const bad: [string, RegExp][] = [
      ["", /not valid JSON/],
      ["{op:trace}", /not valid JSON/],
      ["[1]", /JSON object/],
      ["null", /JSON object/],
      ['{"op":"kill"}', /unknown op "kill"/],
      ['{"op":"toString"}', /unknown op/],
      ['{"selection":["log"]}', /unknown op undefined/],
      ['{"op":"trace","selection":["log"],"mask":1}', /not both/],
      ['{"op":"trace","selection":["nope"]}', /unknown trace selection "nope"/],
      ['{"op":"trace","selection":[1]}', /strings/],
      ['{"op":"trace","selection":{}}', /list of names/],
      ['{"op":"trace","mask":"0x100"}', /invalid trace mask/],
      ['{"op":"trace","mask":true}', /number/],
      ['{"op":"trace","json":"yes"}', /true or false/],
      ['{"op":"trace","jsno":true}', /unknown field "jsno"/],
      ['{"op":"ping","x":1}', /unknown field "x"/],
      [`{"op":"trace","pad":"${"x".repeat(70_000)}"}`, /too long/],
    ];
    for (const [line, reason] of bad) assert.throws(() => parseRequest(line), reason, line);
  });
});

describe("trace records", () => {
  const info = new PacketInfo();

  test("a packet line names the flow, tuple, hash mode, load balancer, target and fwmark", () => {
    infoFromTuple("tcp", "10.100.1.10", 20001, "10.200.0.1", 8081, defaultClassifyOptions, info);
    const json = packetJson("packet", 1_700_000_000_000, 0, info, {
      traceFlow: "t81",
      flow: "api",
      lb: "api",
      target: 3,
      fwmark: 3,
      reason: null,
    });
    const r = JSON.parse(json) as PacketRecord;
    assert.deepEqual(r, {
      ts: 1_700_000_000_000,
      kind: "packet",
      queue: 0,
      family: 4,
      proto: "tcp",
      src: "10.100.1.10",
      dst: "10.200.0.1",
      sport: 20001,
      dport: 8081,
      hash: "5-tuple",
      traceFlow: "t81",
      flow: "api",
      lb: "api",
      target: 3,
      fwmark: 3,
      verdict: "accept",
      reason: null,
    });
    assert.equal(
      formatRecord(r),
      "packet q0 flow=api tcp 10.100.1.10:20001 -> 10.200.0.1:8081 (5-tuple) lb=api target=3 fwmark=3 trace-flow=t81",
    );
  });

  test("drops, IPv6, SCTP ports-only and no flows", () => {
    infoFromTuple("sctp", "fd00::1", 5000, "fd00:200::1", 6000, defaultClassifyOptions, info);
    const drop = packetJson("sctp", 1, 2, info, {
      traceFlow: null,
      flow: null,
      lb: "web",
      target: -1,
      fwmark: -1,
      reason: "no-target",
    });
    const r = JSON.parse(drop) as PacketRecord;
    assert.equal(r.verdict, "drop");
    assert.equal(r.fwmark, null);
    assert.equal(r.hash, "ports");
    assert.equal(
      formatRecordJson(drop),
      "sctp q2 sctp [fd00::1]:5000 -> [fd00:200::1]:6000 (ports) lb=web drop (no-target)",
    );
  });

  test("an ICMP error is traced with the embedded tuple it is hashed on", () => {
    // IPv4 ICMP fragmentation needed from a router, quoting a TCP segment
    // 10.200.0.1:8081 -> 10.100.1.10:20001 (the target's reply, through DSR).
    const inner = [
      0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 200, 0, 1, 10, 100, 1, 10, 0x1f, 0x91, 0x4e,
      0x21, 0, 0, 0, 0,
    ];
    const icmp = [3, 4, 0, 0, 0, 0, 0x05, 0xdc, ...inner];
    const ip = [0x45, 0, 0, 20 + icmp.length, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 1, 10, 200, 0, 1];
    const bytes = Uint8Array.from([...ip, ...icmp]);
    assert.equal(classify(bytes, 0, bytes.length, defaultClassifyOptions, info), 0);
    const line = formatRecordJson(
      packetJson("packet", 1, 0, info, {
        traceFlow: "all",
        flow: null,
        lb: "web",
        target: 2,
        fwmark: 2,
        reason: null,
      }),
    );
    assert.match(line, /tcp 10\.100\.1\.10:20001 -> 10\.200\.0\.1:8081/);
    assert.match(line, /embedded in icmp error type 3 code 4/);
  });

  test("other kinds", () => {
    assert.equal(
      formatRecordJson(flowConfJson(1, 0, "flows", ["web", "api"])),
      "flow-conf q0 flows 2: web, api",
    );
    assert.equal(
      formatRecordJson(flowConfJson(1, 1, "trace-flows", [], "bad")),
      "flow-conf q1 trace-flows not applied: bad",
    );
    assert.equal(
      formatRecordJson(targetJson(1, 0, "web", 7, 2, [1, 3])),
      "target q0 lb=web generation=7 active=2 fwmarks=1,3",
    );
    assert.equal(
      formatRecordJson(logJson(1, "info", 'a "quoted"\nline')),
      'log info: a "quoted"\nline',
    );
    assert.equal(formatRecordJson(droppedJson(1, 12, "tracer")), "12 trace lines dropped");
    assert.equal(
      formatRecordJson(droppedJson(1, 5, "ring", 3)),
      "5 trace records dropped in queue 3 (trace ring full)",
    );
    assert.equal(formatRecordJson("{not json"), "{not json");
  });
});

describe("control endpoint addresses", () => {
  test("[HOST:]PORT", () => {
    assert.deepEqual(parseHostPort("9000"), { host: "127.0.0.1", port: 9000 });
    assert.deepEqual(parseHostPort("127.0.0.2:80"), { host: "127.0.0.2", port: 80 });
    assert.deepEqual(parseHostPort("[::1]:9000"), { host: "::1", port: 9000 });
    assert.deepEqual(parseHostPort("localhost:1"), { host: "localhost", port: 1 });
    for (const bad of ["0", "65536", "x", "::1:80", ":80", "1.2.3.4:", "[::1]"]) {
      assert.throws(() => parseHostPort(bad), /invalid/, bad);
    }
  });

  test("loopback hosts", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1"]) {
      assert.ok(isLoopbackHost(h), h);
    }
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1"]) assert.ok(!isLoopbackHost(h), h);
  });
});
