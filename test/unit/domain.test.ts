// The domain values: one definition each, the same answer for every consumer.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  DomainError,
  FRAGMENT_MARK,
  isLbName,
  LB_NAME_MAX_LENGTH,
  MAX_WEIGHT,
  mergePortRanges,
  parseEndpoint,
  parseFwmark,
  parseHostPort,
  parseLbName,
  parsePortList,
  parseQueue,
  parseQueueRange,
  parseWeight,
  queueNumbers,
} from "../../src/domain/index.js";
import { parseFlow } from "../../src/flows/index.js";
import { balanceChainName, nftTableName } from "../../src/netfilter/render.js";
import { normalizeSpec } from "../../src/netfilter/validate.js";
import {
  controlSocketPath,
  countersFileQueue,
  countersPath,
  flowsPath,
  netnsDir,
  setupRecordPath,
  statePath,
} from "../../src/paths.js";
import { initState, StateError } from "../../src/state/store.js";

const setupSpec = (name: string) => ({
  name,
  mode: "nat" as const,
  vips: ["10.0.0.1"],
  targets: [{ fwmark: 1, address: "10.0.1.1", weight: 1 }],
  queue: { first: 0, last: 0 },
  queueBypass: false,
  synOnly: false,
  protocols: [],
  ports: "",
  statistic: "nth" as const,
  snat: false,
});

describe("load balancer names", () => {
  test("one pattern: 1-20 of [A-Za-z0-9_-], starting with a letter or digit", () => {
    for (const good of ["a", "web", "Web_1", "9lives", "a-b", "x".repeat(LB_NAME_MAX_LENGTH)]) {
      assert.equal(isLbName(good), true, good);
      assert.equal(parseLbName(good), good);
    }
    for (const bad of ["", "a.b", "-a", "_a", "a/b", "a b", "x".repeat(21), "é", 5, undefined]) {
      assert.equal(isLbName(bad), false, String(bad));
      assert.throws(() => parseLbName(bad), /invalid load balancer name .*1-20 characters/);
    }
  });

  test("the longest name still fits iptables' 28-character chain names", () => {
    const longest = "x".repeat(LB_NAME_MAX_LENGTH);
    assert.ok(balanceChainName(longest).length <= 28, balanceChainName(longest));
    assert.ok(nftTableName(longest).length < 256);
  });

  test("init, setup and flows' target agree: a.b is refused by each, ab_1 accepted by each", () => {
    assert.throws(
      () =>
        initState({
          name: "a.b",
          tableSize: 997,
          maxTargets: 4,
          ownFwmark: 0,
          hashSeed: 0,
          sctpPortsOnly: true,
          sctpEncapPort: 0,
        }),
      (err: unknown) => err instanceof StateError && /invalid load balancer name/.test(String(err)),
    );
    assert.throws(() => normalizeSpec(setupSpec("a.b")), /name "a.b" must be 1-20 characters/);
    assert.throws(() => parseFlow({ name: "f", target: "a.b" }), /target "a.b" is invalid/);
    assert.equal(normalizeSpec(setupSpec("ab_1")).name, "ab_1");
    assert.equal(parseFlow({ name: "f", target: "ab_1" }).target, "ab_1");
  });
});

describe("fwmarks and weights", () => {
  test("fwmarks are 1..2^32-1, decimal or hex", () => {
    assert.equal(parseFwmark("1"), 1);
    assert.equal(parseFwmark("0xff"), 255);
    assert.equal(parseFwmark("4294967295"), 0xffffffff);
    assert.equal(parseFwmark(7), 7);
    for (const bad of ["0", "4294967296", "-1", "1.5", "abc", "", 0, 2 ** 32]) {
      assert.throws(() => parseFwmark(bad), /invalid fwmark .*1\.\.4294967295/, String(bad));
    }
    assert.equal(FRAGMENT_MARK, 0x6e666c62);
  });

  test("one MAX_WEIGHT; 0 only where a rule allows it", () => {
    assert.equal(MAX_WEIGHT, 65535);
    assert.equal(parseWeight("65535"), 65535);
    assert.throws(
      () => parseWeight("65536"),
      /invalid weight 65536: expected an integer 1\.\.65535/,
    );
    assert.throws(() => parseWeight("0"), /expected an integer 1\.\.65535/);
    assert.equal(parseWeight("0", { allowZero: true }), 0);
    assert.throws(() => parseWeight("x"), /invalid weight "x"/);
    // The setup spec's bound is the same one (it was 1,000,000 there before).
    const spec = setupSpec("w");
    spec.targets[0].weight = 65536;
    assert.throws(() => normalizeSpec(spec), /weight must be an integer 0\.\.65535/);
  });
});

describe("ports", () => {
  const service = { field: "ports", allowZero: false };
  const packet = { field: "dports", allowZero: true };

  test("one parser, one type: ranges in the order given", () => {
    assert.deepEqual(parsePortList(" 443, 80,1000 - 2000", service), [
      { lo: 443, hi: 443 },
      { lo: 80, hi: 80 },
      { lo: 1000, hi: 2000 },
    ]);
    assert.deepEqual(parsePortList("", service), []);
    assert.deepEqual(parsePortList(undefined, service), []);
    assert.deepEqual(mergePortRanges(parsePortList("81,80,70-79,100-200,150", packet)), [
      { lo: 70, hi: 81 },
      { lo: 100, hi: 200 },
    ]);
  });

  test("port 0: a packet may carry it, no service listens on it", () => {
    assert.deepEqual(parsePortList("0", packet), [{ lo: 0, hi: 0 }]);
    assert.throws(() => parsePortList("0", service), /ports: port 0 is not a service port/);
    assert.throws(() => parsePortList("0-10", service), /port 0 is not a service port/);
  });

  test("errors name the field and the item", () => {
    assert.throws(
      () => parsePortList("70000", packet),
      /^DomainError: dports: port 70000 is above 65535$/,
    );
    assert.throws(() => parsePortList("9-8", packet), /dports: bad range "9-8": 9 is above 8/);
    assert.throws(() => parsePortList("80,", packet), /dports: empty item in "80,"/);
    assert.throws(
      () => parsePortList("http", packet),
      /bad port or range "http" \(a port 0\.\.65535/,
    );
  });
});

describe("queues", () => {
  test("N or FIRST:LAST, at most 64 queues", () => {
    assert.deepEqual(parseQueueRange("3"), { first: 3, last: 3 });
    assert.deepEqual(queueNumbers(parseQueueRange("0:3")), [0, 1, 2, 3]);
    assert.throws(() => parseQueueRange("5:2"), /FIRST <= LAST/);
    assert.throws(() => parseQueueRange("70000"), /0\.\.65535/);
    assert.throws(() => parseQueueRange("0:64"), /at most 64 queues/);
    assert.throws(() => parseQueueRange("x"), /expected N or FIRST:LAST/);
    assert.equal(parseQueue("65535"), 65535);
    assert.throws(() => parseQueue("65536"), /invalid queue/);
  });
});

describe("endpoints", () => {
  test("ADDR:PORT, [V6]:PORT, a bare address is port 0", () => {
    assert.deepEqual(parseEndpoint("10.0.0.1:80"), { address: "10.0.0.1", port: 80, family: 4 });
    assert.deepEqual(parseEndpoint("[FD00::0001]:443"), {
      address: "fd00::1",
      port: 443,
      family: 6,
    });
    assert.deepEqual(parseEndpoint("10.0.0.1"), { address: "10.0.0.1", port: 0, family: 4 });
    assert.deepEqual(parseEndpoint("fd00::1"), { address: "fd00::1", port: 0, family: 6 });
    assert.deepEqual(parseEndpoint("[fd00::1]"), { address: "fd00::1", port: 0, family: 6 });
  });

  test("an empty port is an error, not port 0", () => {
    assert.throws(() => parseEndpoint("1.2.3.4:"), /"1\.2\.3\.4:": the port after ":" is missing/);
    assert.throws(() => parseEndpoint("[fd00::1]:"), /the port after ":" is missing/);
    assert.throws(() => parseEndpoint("1.2.3.4:65536"), /invalid port "65536"/);
    assert.throws(() => parseEndpoint("1.2.3.4:x"), /invalid port "x"/);
    assert.throws(() => parseEndpoint("10.0.0.300:1"), /invalid address "10\.0\.0\.300"/);
    assert.throws(() => parseEndpoint("10.1:1"), /invalid address "10\.1"/);
  });

  test("[HOST:]PORT with a default host", () => {
    assert.deepEqual(parseHostPort("9000", "127.0.0.1"), { host: "127.0.0.1", port: 9000 });
    assert.deepEqual(parseHostPort("[::1]:80", "127.0.0.1"), { host: "::1", port: 80 });
    assert.throws(() => parseHostPort("0", "h"), DomainError);
    assert.throws(() => parseHostPort("::1:80", "h"), /\[ADDR\]:PORT/);
  });
});

describe("runtime paths", () => {
  test("one module: state dir and run dir, moved by the environment", () => {
    const saved = { state: process.env.NFLB_STATE_DIR, run: process.env.NFLB_RUN_DIR };
    try {
      process.env.NFLB_STATE_DIR = "/tmp/s";
      process.env.NFLB_RUN_DIR = "/tmp/r";
      assert.equal(statePath("web"), "/tmp/s/web");
      assert.equal(countersPath("web", 3), "/tmp/s/web.q3.stats");
      assert.equal(countersFileQueue("web", "web.q3.stats"), 3);
      assert.equal(countersFileQueue("web", "web2.q3.stats"), undefined);
      assert.equal(countersFileQueue("web", "web.q3.stats.tmp"), undefined);
      assert.equal(flowsPath("flows"), "/tmp/s/flows.json");
      assert.match(netnsDir(), /^\/tmp\/r\/netns-\d+$/);
      assert.equal(controlSocketPath("web"), `${netnsDir()}/web.sock`);
      assert.equal(setupRecordPath("web"), `${netnsDir()}/web.setup.json`);
      assert.throws(() => statePath("../etc"), /invalid load balancer name/);
      delete process.env.NFLB_STATE_DIR;
      delete process.env.NFLB_RUN_DIR;
      assert.equal(statePath("web"), "/dev/shm/nflb/web");
      assert.match(controlSocketPath("web"), /^\/run\/nflb\/netns-\d+\/web\.sock$/);
    } finally {
      for (const [k, v] of [
        ["NFLB_STATE_DIR", saved.state],
        ["NFLB_RUN_DIR", saved.run],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
