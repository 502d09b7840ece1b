// Flow definitions: parsing, validation (every error message checked) and normalisation.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  checkFlowSpec,
  FlowError,
  type FlowInput,
  type FlowSpec,
  flowInputOf,
  hashesOnAddresses,
  parseFlow,
} from "../../src/flows/index.js";

const base = { name: "web", target: "lb1" };

function flow(extra: Partial<FlowInput>): FlowSpec {
  return parseFlow({ ...base, ...extra });
}

function rejects(extra: Partial<FlowInput>, message: string): void {
  assert.throws(
    () => parseFlow({ ...base, ...extra }),
    (e: unknown) => {
      assert.ok(e instanceof FlowError, `not a FlowError: ${e}`);
      assert.equal(e.message, message);
      return true;
    },
  );
}

describe("parseFlow: good input, normalised", () => {
  test("defaults: any protocol, any address, any port, priority 0", () => {
    assert.deepEqual(flow({}), {
      name: "web",
      target: "lb1",
      priority: 0,
      protocols: [],
      dsts: [],
      srcs: [],
      dports: [],
      sports: [],
      match: "",
      udpencap: 0,
    });
    assert.equal(hashesOnAddresses(flow({})), true);
    assert.equal(hashesOnAddresses(flow({ protocols: "tcp" })), false);
  });

  test("empty strings mean 'not given'", () => {
    assert.deepEqual(
      flow({ priority: "", protocols: " ", dsts: "", dports: "", match: "  ", udpencap: "" }),
      flow({}),
    );
  });

  test("priority as number or string, signed", () => {
    assert.equal(flow({ priority: 100 }).priority, 100);
    assert.equal(flow({ priority: "-7" }).priority, -7);
    assert.equal(flow({ priority: "+3" }).priority, 3);
    assert.equal(flow({ priority: "2147483647" }).priority, 2147483647);
    assert.equal(flow({ priority: -2147483648 }).priority, -2147483648);
    assert.ok(Object.is(flow({ priority: "-0" }).priority, 0));
  });

  test("protocols: case-insensitive, deduplicated, in the order tcp, udp, sctp", () => {
    assert.deepEqual(flow({ protocols: "SCTP, udp,tcp,udp" }).protocols, ["tcp", "udp", "sctp"]);
  });

  test("CIDRs: host bits cleared, addresses as /32 or /128, merged, IPv4 first", () => {
    const f = flow({
      dsts: "fd00:0:0::1, 10.0.0.5/24, 10.0.1.0/24,10.0.2.7, 192.168.1.0/25,192.168.1.128/25",
    });
    assert.deepEqual(f.dsts, ["10.0.0.0/23", "10.0.2.7/32", "192.168.1.0/24", "fd00::1/128"]);
  });

  test("CIDRs: contained ones vanish, ranges become the fewest CIDRs", () => {
    assert.deepEqual(flow({ srcs: "10.0.0.0/8,10.1.2.3,0.0.0.0/0" }).srcs, ["0.0.0.0/0"]);
    // 10.0.0.1 .. 10.0.0.6 as given addresses: 1/32, 2/31, 4/31, 6/32.
    assert.deepEqual(flow({ srcs: "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6" }).srcs, [
      "10.0.0.1/32",
      "10.0.0.2/31",
      "10.0.0.4/31",
      "10.0.0.6/32",
    ]);
    assert.deepEqual(flow({ dsts: "FD00:0000::/16,fd00:1::/32,::/0" }).dsts, ["::/0"]);
    assert.deepEqual(flow({ dsts: "2001:DB8::1:0:0:1/64" }).dsts, ["2001:db8::/64"]);
  });

  test("ports: sorted, overlapping and adjacent ranges merged", () => {
    const f = flow({
      protocols: "tcp",
      dports: "443,80,81,1000-2000,1500-3000,0",
      sports: "7 - 9",
    });
    assert.deepEqual(f.dports, ["0", "80-81", "443", "1000-3000"]);
    assert.deepEqual(f.sports, ["7-9"]);
    assert.deepEqual(flow({ protocols: "udp", dports: "65535,0-65534" }).dports, ["0-65535"]);
  });

  test("byte matches: normalised, sorted, deduplicated", () => {
    const f = flow({
      protocols: "tcp,udp",
      match:
        "udp[8:1]=1, tcp[13:1] & 0x02 = 0x02, tcp[2:2]=5001,tcp[2 : 2] == 0x1389, " +
        "tcp[12:2] & 0x01FF = 0x0002, tcp[13] & 0xff = 2, udp[0:4] & 0xffffffff = 0xDEADBEEF",
    });
    assert.equal(
      f.match,
      "tcp[2:2] = 5001, tcp[12:2] & 0x01ff = 0x0002, tcp[13:1] & 0x02 = 0x02, " +
        "tcp[13:1] = 2, udp[0:4] = 3735928559, udp[8:1] = 1",
    );
  });

  test("byte matches: the largest offset and values", () => {
    const f = flow({ protocols: "sctp", match: "sctp[59:4] = 0xffffffff, sctp[0:2] = 65535" });
    assert.equal(f.match, "sctp[0:2] = 65535, sctp[59:4] = 4294967295");
  });

  test("udpencap with sctp", () => {
    assert.equal(flow({ protocols: "sctp", udpencap: "9899" }).udpencap, 9899);
    assert.equal(flow({ protocols: "sctp,udp", udpencap: 9899 }).udpencap, 9899);
    assert.equal(flow({ udpencap: "0" }).udpencap, 0);
  });

  test("a normalised flow parses to itself; checkFlowSpec accepts it back from JSON", () => {
    const f = flow({
      priority: 5,
      protocols: "tcp,sctp",
      dsts: "10.0.0.0/24,fd00::/64",
      srcs: "192.0.2.1",
      dports: "80,443",
      sports: "1024-65535",
      match: "tcp[13:1] & 0x02 = 0x02",
      udpencap: 9899,
    });
    assert.deepEqual(parseFlow(flowInputOf(f)), f);
    assert.deepEqual(checkFlowSpec(JSON.parse(JSON.stringify(f))), f);
  });
});

describe("parseFlow: bad input, with the reason", () => {
  const cases: [string, Partial<FlowInput>, string][] = [
    [
      "bad name",
      { name: "a b" },
      'flow name "a b" is invalid: 1-64 characters from A-Z a-z 0-9 _ . -',
    ],
    ["empty name", { name: "" }, 'flow name "" is invalid: 1-64 characters from A-Z a-z 0-9 _ . -'],
    [
      "name too long",
      { name: "x".repeat(65) },
      `flow name "${"x".repeat(65)}" is invalid: 1-64 characters from A-Z a-z 0-9 _ . -`,
    ],
    [
      "bad target",
      { target: "-lb" },
      'target "-lb" is invalid: a load balancer name, 1-20 characters from A-Z a-z 0-9 _ -, starting with a letter or digit',
    ],
    [
      "target too long",
      { target: "l".repeat(21) },
      `target "${"l".repeat(21)}" is invalid: a load balancer name, 1-20 characters from A-Z a-z 0-9 _ -, starting with a letter or digit`,
    ],
    ["priority not an integer", { priority: "1.5" }, 'priority "1.5" is not an integer'],
    ["priority a word", { priority: "high" }, 'priority "high" is not an integer'],
    ["priority a fraction", { priority: 0.5 }, "priority 0.5 is not an integer"],
    [
      "priority out of range",
      { priority: "2147483648" },
      'priority "2147483648" is out of range (-2147483648..2147483647)',
    ],
    [
      "unknown protocol",
      { protocols: "tcp,icmp" },
      'protocols: unknown protocol "icmp" (tcp, udp or sctp)',
    ],
    [
      "trailing comma in protocols",
      { protocols: "tcp," },
      'protocols: empty item in "tcp," (leading, trailing or doubled comma)',
    ],
    ["bad address", { dsts: "10.0.0.300" }, 'dsts: bad address "10.0.0.300"'],
    ["address in a short form", { dsts: "10.1" }, 'dsts: bad address "10.1"'],
    ["address with a zone", { srcs: "fe80::1%eth0" }, 'srcs: bad address "fe80::1%eth0"'],
    ["bad address in a CIDR", { srcs: "10.0.0/8" }, 'srcs: bad address "10.0.0" in "10.0.0/8"'],
    [
      "bad CIDR prefix length",
      { dsts: "10.0.0.0/33" },
      'dsts: bad CIDR "10.0.0.0/33": prefix length 33 is above 32',
    ],
    [
      "bad IPv6 prefix length",
      { dsts: "fd00::/129" },
      'dsts: bad CIDR "fd00::/129": prefix length 129 is above 128',
    ],
    [
      "CIDR without a length",
      { dsts: "10.0.0.0/" },
      'dsts: bad CIDR "10.0.0.0/": bad prefix length',
    ],
    [
      "doubled comma in dsts",
      { dsts: "10.0.0.1,,10.0.0.2" },
      'dsts: empty item in "10.0.0.1,,10.0.0.2" (leading, trailing or doubled comma)',
    ],
    [
      "families that never meet",
      { dsts: "10.0.0.0/8", srcs: "fd00::/8" },
      "dsts (IPv4 only) and srcs (IPv6 only) share no address family: the flow could never match",
    ],
    [
      "reversed range",
      { protocols: "tcp", dports: "2000-1000" },
      'dports: bad range "2000-1000": 2000 is above 1000',
    ],
    ["port too big", { protocols: "tcp", dports: "70000" }, "dports: port 70000 is above 65535"],
    [
      "range end too big",
      { protocols: "udp", sports: "1-65536" },
      "sports: port 65536 is above 65535",
    ],
    [
      "port not a number",
      { protocols: "tcp", dports: "http" },
      'dports: bad port or range "http" (a port 0..65535 or a range like 1000-2000)',
    ],
    [
      "negative port",
      { protocols: "tcp", dports: "-1" },
      'dports: bad port or range "-1" (a port 0..65535 or a range like 1000-2000)',
    ],
    [
      "ports without protocols",
      { dports: "80" },
      "dports need protocols (tcp, udp or sctp): a flow without protocols has no ports",
    ],
    [
      "source ports without protocols",
      { sports: "80" },
      "sports need protocols (tcp, udp or sctp): a flow without protocols has no ports",
    ],
    [
      "match size 3",
      { protocols: "tcp", match: "tcp[2:3] = 1" },
      'match: "tcp[2:3] = 1": size 3 is not 1, 2 or 4',
    ],
    [
      "match value too big",
      { protocols: "tcp", match: "tcp[2:2] = 70000" },
      'match: "tcp[2:2] = 70000": value 70000 does not fit in 2 bytes (max 65535)',
    ],
    [
      "match mask too big",
      { protocols: "tcp", match: "tcp[13:1] & 0x100 = 1" },
      'match: "tcp[13:1] & 0x100 = 1": mask 0x100 does not fit in 1 byte (max 255)',
    ],
    [
      "match value too big for 4 bytes",
      { protocols: "tcp", match: "tcp[4:4] = 0x100000000" },
      'match: "tcp[4:4] = 0x100000000": value 0x100000000 does not fit in 4 bytes (max 4294967295)',
    ],
    [
      "match unknown protocol",
      { protocols: "tcp", match: "ip[0:1] = 4" },
      'match: "ip[0:1] = 4": unknown protocol "ip" (tcp, udp or sctp)',
    ],
    [
      "match missing =",
      { protocols: "tcp", match: "tcp[2:2] 5001" },
      'match: "tcp[2:2] 5001": missing "=" between "tcp[2:2]" and "5001"',
    ],
    [
      "match missing value",
      { protocols: "tcp", match: "tcp[2:2] & 0xff" },
      'match: "tcp[2:2] & 0xff": missing "= value" after "tcp[2:2] & 0xff"',
    ],
    [
      "match = without a value",
      { protocols: "tcp", match: "tcp[2:2] =" },
      'match: "tcp[2:2] =": expected a value after "="',
    ],
    [
      "match trailing comma",
      { protocols: "tcp", match: "tcp[2:2] = 1," },
      'match: empty term in "tcp[2:2] = 1," (leading, trailing or doubled comma)',
    ],
    [
      "match protocol not among the flow's",
      { protocols: "tcp", match: "udp[0:2] = 53" },
      `match: "udp[0:2] = 53": udp is not among the flow's protocols (tcp)`,
    ],
    [
      "match without protocols",
      { match: "tcp[13:1] = 2" },
      `match: "tcp[13:1] = 2": tcp is not among the flow's protocols (none: byte matches need protocols)`,
    ],
    [
      "match offset too big",
      { protocols: "tcp", match: "tcp[60:1] = 1" },
      'match: "tcp[60:1] = 1": offset 60 is above 59',
    ],
    [
      "match other operator",
      { protocols: "tcp", match: "tcp[13:1] != 2" },
      'match: "tcp[13:1] != 2": only "=" is supported',
    ],
    [
      "match bad number",
      { protocols: "tcp", match: "tcp[2:2] = 0xZZ" },
      'match: "tcp[2:2] = 0xZZ": bad value "0xZZ" (decimal or 0x hex)',
    ],
    [
      "match bad offset",
      { protocols: "tcp", match: "tcp[x:1] = 1" },
      'match: "tcp[x:1] = 1": bad offset "x" (decimal or 0x hex)',
    ],
    [
      "match missing ]",
      { protocols: "tcp", match: "tcp[2:2 = 1" },
      'match: "tcp[2:2 = 1": expected "]" after the offset and size',
    ],
    [
      "match missing [",
      { protocols: "tcp", match: "tcp 2 = 1" },
      'match: "tcp 2 = 1": expected "[" after "tcp"',
    ],
    [
      "match not a term",
      { protocols: "tcp", match: "[2:2] = 1" },
      'match: "[2:2] = 1": expected proto[offset:size] = value, proto tcp, udp or sctp',
    ],
    [
      "match junk after the value",
      { protocols: "tcp", match: "tcp[2:2] = 1 and tcp[0:2] = 2" },
      'match: "tcp[2:2] = 1 and tcp[0:2] = 2": unexpected "and tcp[0:2] = 2" after the value',
    ],
    [
      "match mask 0",
      { protocols: "tcp", match: "tcp[13:1] & 0 = 0" },
      'match: "tcp[13:1] & 0 = 0": mask 0 matches every packet',
    ],
    [
      "match value outside the mask",
      { protocols: "tcp", match: "tcp[13:1] & 0x02 = 0x03" },
      'match: "tcp[13:1] & 0x02 = 0x03": value 0x03 has bits outside the mask 0x02: never matches',
    ],
    [
      "match contradiction",
      { protocols: "tcp", match: "tcp[13:1] = 2, tcp[12:2] & 0x00ff = 0x0004" },
      'match: "tcp[12:2] & 0x00ff = 0x0004" contradicts "tcp[13:1] = 2": never matches',
    ],
    ["udpencap not a port", { protocols: "sctp", udpencap: "x" }, 'udpencap "x" is not a UDP port'],
    [
      "udpencap too big",
      { protocols: "sctp", udpencap: 70000 },
      "udpencap 70000 is not a UDP port (1..65535, or 0 for off)",
    ],
    [
      "udpencap without sctp",
      { protocols: "udp", udpencap: 9899 },
      "udpencap 9899 needs sctp among the protocols",
    ],
  ];
  for (const [what, input, message] of cases) {
    test(what, () => rejects(input, message));
  }

  test("contradictions only within a protocol", () => {
    assert.doesNotThrow(() => flow({ protocols: "tcp,udp", match: "tcp[0:1] = 1, udp[0:1] = 2" }));
    assert.doesNotThrow(() =>
      flow({ protocols: "tcp", match: "tcp[13:1] & 0x02 = 0x02, tcp[13:1] & 0x10 = 0" }),
    );
  });
});

describe("checkFlowSpec: stored flows of the wrong shape", () => {
  const good = JSON.parse(JSON.stringify(flow({ protocols: "tcp", dports: "80" })));
  const cases: [string, unknown, string][] = [
    ["not an object", 42, "a flow must be an object"],
    ["an array", [], "a flow must be an object"],
    ["name missing", { ...good, name: undefined }, "flow: name must be a string"],
    [
      "list not an array",
      { ...good, dsts: "10.0.0.1" },
      'flow "web": dsts must be an array of strings',
    ],
    [
      "list item with a comma",
      { ...good, dports: ["80,81"] },
      'flow "web": dports: an item holds a comma',
    ],
    ["priority a string", { ...good, priority: "1" }, 'flow "web": priority must be a number'],
    ["bad content", { ...good, dports: ["99999"] }, "dports: port 99999 is above 65535"],
  ];
  for (const [what, value, message] of cases) {
    test(what, () => {
      assert.throws(() => checkFlowSpec(value), { name: "FlowError", message });
    });
  }

  test("a stored flow is normalised again", () => {
    assert.deepEqual(checkFlowSpec({ ...good, dsts: ["10.0.0.7/24"] }).dsts, ["10.0.0.0/24"]);
  });
});
