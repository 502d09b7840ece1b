// The BGP driver's pure parts (validation, rendering, decisions, tracking, parsing of
// BIRD's replies) and its error reporting, against the real `bird -p` and `birdc`.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { birdc } from "../../src/bgp/birdc.js";
import {
  BgpError,
  type BgpSpec,
  decideService,
  parseBirdTime,
  parseCheck,
  parseCommunity,
  parseProtocols,
  parseReply,
  planVips,
  protocolName,
  renderInclude,
  type ServiceFacts,
  type VipAnnouncement,
  validateBgpSpec,
  validateDevice,
  validateVip,
} from "../../src/bgp/index.js";
import { parseBfdSessions } from "../../src/bgp/parse.js";
import { trackVips, type VipOutcome } from "../../src/bgp/track.js";

function spec(over: Partial<BgpSpec> = {}): BgpSpec {
  return {
    localAsn: 65001,
    routerId: "10.0.0.2",
    neighbors: [
      { address: "10.0.0.1", asn: 65000, holdTimeS: 9, bfd: { intervalMs: 100, multiplier: 3 } },
      { address: "FD00:0:0::1", asn: 65000, holdTimeS: 90, password: "s3cret" },
    ],
    bird: { socket: "/run/bird/bird.ctl", include: "/etc/bird/nflb.conf" },
    ...over,
  };
}

const vip = (prefix: string, communities: string[] = [], med?: number): VipAnnouncement =>
  med === undefined ? { prefix, communities } : { prefix, communities, med };

function facts(over: Partial<ServiceFacts> = {}): ServiceFacts {
  return {
    service: "web",
    vips: [vip("10.1.0.1/32")],
    rulesInstalled: true,
    dataPlaneRunning: true,
    warm: true,
    healthy: 2,
    minHealthy: 1,
    ...over,
  };
}

const invalid = (fn: () => unknown, message: RegExp) =>
  assert.throws(
    fn,
    (e: unknown) => e instanceof BgpError && e.kind === "invalid" && message.test(e.message),
  );

describe("validation", () => {
  test("a spec is normalised: canonical addresses", () => {
    const s = validateBgpSpec(spec());
    assert.equal(s.neighbors[1].address, "fd00::1");
    assert.equal(protocolName(s.neighbors[0].address), "nflb_10_0_0_1");
    assert.equal(protocolName(s.neighbors[1].address), "nflb_fd00__1");
  });

  const bad: [string, Partial<BgpSpec>, RegExp][] = [
    ["ASN 0", { localAsn: 0 }, /^bgp\.localAsn: expected an AS number/],
    ["AS_TRANS", { localAsn: 23456 }, /^bgp\.localAsn: .*not 23456/],
    ["ASN above 32 bits", { localAsn: 2 ** 32 }, /^bgp\.localAsn/],
    ["router id v6", { routerId: "fd00::1" }, /^bgp\.routerId: expected an IPv4 address/],
    ["router id 0.0.0.0", { routerId: "0.0.0.0" }, /^bgp\.routerId/],
    ["no neighbours", { neighbors: [] }, /^bgp\.neighbors: expected at least one/],
    [
      "duplicate neighbours",
      {
        neighbors: [
          { address: "fd00::1", asn: 1, holdTimeS: 9 },
          { address: "fd00:0::1", asn: 2, holdTimeS: 9 },
        ],
      },
      /^bgp\.neighbors\[1\]\.address: fd00::1 is also neighbors\[0\]/,
    ],
    [
      "hold time 2",
      { neighbors: [{ address: "10.0.0.1", asn: 1, holdTimeS: 2 }] },
      /^bgp\.neighbors\[0\]\.holdTimeS: expected 3\.\.65535/,
    ],
    [
      "multicast neighbour",
      { neighbors: [{ address: "224.0.0.5", asn: 1, holdTimeS: 9 }] },
      /^bgp\.neighbors\[0\]\.address: 224\.0\.0\.5 is a multicast address/,
    ],
    [
      "mapped neighbour",
      { neighbors: [{ address: "::ffff:10.0.0.1", asn: 1, holdTimeS: 9 }] },
      /IPv4-mapped/,
    ],
    [
      "BFD interval 0 ms",
      {
        neighbors: [
          { address: "10.0.0.1", asn: 1, holdTimeS: 9, bfd: { intervalMs: 0, multiplier: 3 } },
        ],
      },
      /^bgp\.neighbors\[0\]\.bfd\.intervalMs: expected 1\.\.60000 ms/,
    ],
    [
      "BFD multiplier 0",
      {
        neighbors: [
          { address: "10.0.0.1", asn: 1, holdTimeS: 9, bfd: { intervalMs: 50, multiplier: 0 } },
        ],
      },
      /bfd\.multiplier: expected 1\.\.255/,
    ],
    [
      "password with a quote",
      { neighbors: [{ address: "10.0.0.1", asn: 1, holdTimeS: 9, password: 'a"b' }] },
      /^bgp\.neighbors\[0\]\.password: printable ASCII only/,
    ],
    [
      "password of 81 characters",
      { neighbors: [{ address: "10.0.0.1", asn: 1, holdTimeS: 9, password: "x".repeat(81) }] },
      /at most 80 characters/,
    ],
    [
      "relative socket",
      { bird: { socket: "bird.ctl", include: "/etc/bird/nflb.conf" } },
      /^bgp\.bird\.socket: expected an absolute path/,
    ],
    [
      "include with a quote",
      { bird: { socket: "/run/bird.ctl", include: '/etc/"x' } },
      /^bgp\.bird\.include/,
    ],
  ];
  for (const [name, over, message] of bad) {
    test(`rejects ${name}`, () => invalid(() => validateBgpSpec(spec(over)), message));
  }

  test("VIPs: canonical prefix, communities, MED", () => {
    const v = validateVip(vip("FD00:0::0:1/128", ["65000:1", "4200000000:7:8"], 4294967295));
    assert.equal(v.prefix, "fd00::1/128");
    assert.equal(v.family, 6);
    assert.deepEqual(v.communities, [
      { kind: "standard", asn: 65000, value: 1 },
      { kind: "large", global: 4200000000, local1: 7, local2: 8 },
    ]);
    assert.equal(v.med, 4294967295);
    invalid(() => validateVip(vip("10.0.0.1")), /expected a prefix like/);
    invalid(() => validateVip(vip("10.0.0.1/33")), /expected a prefix like/);
    invalid(
      () => validateVip(vip("10.0.0.1/24"), "services.web.vips[0]"),
      /^services\.web\.vips\[0\]: 10\.0\.0\.1\/24 has host bits set \(the network is 10\.0\.0\.0\/24\)/,
    );
    invalid(
      () => validateVip(vip("10.0.0.1/32", ["65536:1"])),
      /\.communities\[0\]: expected ASN:VALUE/,
    );
    invalid(() => validateVip(vip("10.0.0.1/32", ["1:2:4294967296"])), /\.communities\[0\]/);
    invalid(() => validateVip(vip("10.0.0.1/32", ["1:2:3:4"])), /\.communities\[0\]/);
    invalid(() => validateVip(vip("10.0.0.1/32", [], -1)), /\.med: expected 0\.\.4294967295/);
    assert.deepEqual(parseCommunity("0:0"), { kind: "standard", asn: 0, value: 0 });
    assert.equal(parseCommunity("65535:65536"), undefined);
  });

  test("device names fit the kernel and BIRD's strings", () => {
    assert.equal(validateDevice("nflb-bgp"), "nflb-bgp");
    invalid(() => validateDevice("a".repeat(15)), /1-14 characters/);
    invalid(() => validateDevice('nf"lb'), /1-14 characters/);
    invalid(() => validateDevice(".."), /1-14 characters/);
  });
});

describe("rendering", () => {
  const s = validateBgpSpec(spec());
  const vips = [
    validateVip(vip("10.1.0.1/32", ["65001:100", "65001:1:2"], 10)),
    validateVip(vip("fd01::1/128")),
  ];

  test("the include: tables, filter, BFD, static VIP routes via the device, one BGP block per neighbour", () => {
    assert.equal(
      renderInclude(s, vips, { device: "nflb-bgp" }),
      `# Written by nflb, rewritten whenever its announcements change: do not edit.
# bird.conf includes it once: include "/etc/bird/nflb.conf";
# A VIP route points at device "nflb-bgp", which exists only while nflb
# holds it open: when nflb stops or dies, BIRD withdraws every VIP at once.

ipv4 table nflb4;
ipv6 table nflb6;

# BIRD sends a MED to an eBGP neighbour only when the export filter sets it, so the
# static routes carry it in an attribute of their own and the filter copies it.
attribute int nflb_med;

filter nflb_export {
  if defined(nflb_med) then bgp_med = nflb_med;
  accept;
}

protocol bfd nflb_bfd {
}

protocol static nflb_vip4 {
  ipv4 { table nflb4; };
  check link yes;
  route 10.1.0.1/32 via "nflb-bgp" { bgp_community.add((65001, 100)); bgp_large_community.add((65001, 1, 2)); nflb_med = 10; };
}

protocol static nflb_vip6 {
  ipv6 { table nflb6; };
  check link yes;
  route fd01::1/128 via "nflb-bgp";
}

protocol bgp nflb_10_0_0_1 {
  description "nflb: VIPs to 10.0.0.1";
  router id 10.0.0.2;
  local as 65001;
  neighbor 10.0.0.1 as 65000;
  hold time 9;
  bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
  ipv4 { table nflb4; import none; export filter nflb_export; next hop self; };
}

protocol bgp nflb_fd00__1 {
  description "nflb: VIPs to fd00::1";
  router id 10.0.0.2;
  local as 65001;
  neighbor fd00::1 as 65000;
  hold time 90;
  password "s3cret";
  ipv6 { table nflb6; import none; export filter nflb_export; next hop self; };
}
`,
    );
  });

  /** Every protocol block but the static ones, verbatim. */
  const stableBlocks = (text: string) =>
    text
      .split("\n\n")
      .filter(
        (b) =>
          /^(protocol (bgp|bfd)|filter|attribute|ipv4 table)/m.test(b) &&
          !/protocol static/.test(b),
      );

  test("the BGP blocks do not depend on the VIPs or their attributes (no session reset)", () => {
    const base = stableBlocks(renderInclude(s, vips, { device: "nflb-bgp" }));
    for (const other of [
      [],
      [vips[0]],
      [validateVip(vip("10.1.0.1/32", ["65001:200"], 99)), validateVip(vip("10.9.0.0/24"))],
    ]) {
      assert.deepEqual(stableBlocks(renderInclude(s, other, { device: "nflb-bgp" })), base);
    }
    // The static blocks are always there, with or without VIPs.
    assert.match(
      renderInclude(s, [], { device: "nflb-bgp" }),
      /protocol static nflb_vip4 \{\n {2}ipv4 \{ table nflb4; \};\n {2}check link yes;\n\}/,
    );
  });

  test("no BFD protocol without a neighbour that asks for it; the same text for the same input", () => {
    const plain = validateBgpSpec(
      spec({ neighbors: [{ address: "10.0.0.1", asn: 65000, holdTimeS: 9 }] }),
    );
    const text = renderInclude(plain, [...vips].reverse(), { device: "x" });
    assert.doesNotMatch(text, /protocol bfd/);
    assert.equal(
      text,
      renderInclude(plain, vips, { device: "x" }),
      "order of VIPs does not matter",
    );
  });

  test("BIRD itself parses every rendering (bird -p)", async () => {
    await parseCheck(renderInclude(s, vips, { device: "nflb-bgp" }));
    await parseCheck(renderInclude(s, [], { device: "nflb-bgp" }));
    const many = Array.from({ length: 50 }, (_, i) =>
      validateVip(vip(`10.2.${i}.0/24`, [`65001:${i}`, `4200000000:${i}:1`], i)),
    );
    await parseCheck(renderInclude(s, many, { device: "d" }));
    const odd = validateBgpSpec(
      spec({
        neighbors: [{ address: "10.0.0.1", asn: 65000, holdTimeS: 3, password: "a\\b'$ {};#x" }],
      }),
    );
    await parseCheck(renderInclude(odd, vips, { device: "d" }));
    await assert.rejects(parseCheck("protocol bogus {}\n"), (e: unknown) => {
      assert.ok(e instanceof BgpError && e.kind === "invalid");
      assert.match(e.message, /^BIRD rejects the rendered configuration: .*nflb\.conf:1:\d+ /);
      return true;
    });
  });
});

describe("decisions", () => {
  const cases: [string, Partial<ServiceFacts>, boolean, string][] = [
    ["served", {}, true, "served (2 healthy targets, min-healthy 1)"],
    ["rules missing", { rulesInstalled: false, warm: false }, false, "rules not installed"],
    ["data plane down", { dataPlaneRunning: false }, false, "data plane not running"],
    [
      "warming up, even with healthy targets",
      { warm: false, healthy: 3 },
      false,
      "warming up (no health results yet)",
    ],
    ["no healthy target", { healthy: 0 }, false, "no healthy target"],
    ["below min-healthy", { healthy: 1, minHealthy: 2 }, false, "1 healthy target, min-healthy 2"],
    ["min-healthy 0 still needs one", { healthy: 0, minHealthy: 0 }, false, "no healthy target"],
    [
      "at min-healthy",
      { healthy: 2, minHealthy: 2 },
      true,
      "served (2 healthy targets, min-healthy 2)",
    ],
  ];
  for (const [name, over, announce, reason] of cases) {
    test(name, () => {
      const d = decideService(facts(over));
      assert.equal(d.announce, announce);
      assert.equal(d.reason, reason);
    });
  }

  test("a VIP shared by services is announced only when every one is served", () => {
    const shared = vip("10.1.0.1/32", ["65001:1"]);
    const tcp = facts({ service: "tcp", vips: [shared] });
    const udp = facts({ service: "udp", vips: [shared, vip("10.1.0.2/32")], healthy: 0 });
    const plans = planVips([tcp, udp]);
    assert.deepEqual(
      plans.map((p) => [p.vip.prefix, p.services, p.decision.announce, p.decision.reason]),
      [
        ["10.1.0.1/32", ["tcp", "udp"], false, "udp: no healthy target"],
        ["10.1.0.2/32", ["udp"], false, "no healthy target"],
      ],
    );
    const both = planVips([tcp, { ...udp, healthy: 1 }]);
    assert.equal(both[0].decision.announce, true);
    assert.equal(both[0].decision.reason, "served by tcp, udp");
  });

  test("one VIP with two sets of attributes is an error", () => {
    invalid(
      () =>
        planVips([
          facts({ service: "a", vips: [vip("10.1.0.1/32", ["1:1"])] }),
          facts({ service: "b", vips: [vip("10.1.0.1/32", ["1:1"], 5)] }),
        ]),
      /^VIP 10\.1\.0\.1\/32 is announced with communities \[1:1\], med none by a but with communities \[1:1\], med 5 by b$/,
    );
  });
});

describe("tracking", () => {
  const v = validateVip(vip("10.1.0.1/32"));
  const out = (
    announced: boolean,
    reason = announced ? "served" : "no healthy target",
  ): VipOutcome => ({
    vip: v,
    services: ["web"],
    wanted: announced,
    announced,
    reason,
  });

  test("since and transitions follow the announced state, with the time passed in", () => {
    let t = trackVips(new Map(), [out(false)], 1000);
    assert.deepEqual(t.changes, []);
    assert.equal(t.next.get(v.prefix)?.transitions, 0);
    t = trackVips(t.next, [out(true)], 2000);
    assert.deepEqual(t.changes, [{ prefix: v.prefix, announced: true, reason: "served" }]);
    t = trackVips(t.next, [out(true, "served (3)")], 3000);
    assert.deepEqual(t.changes, []);
    assert.equal(t.next.get(v.prefix)?.sinceMs, 2000, "a new reason is no transition");
    t = trackVips(t.next, [out(false)], 4000);
    assert.equal(t.next.get(v.prefix)?.transitions, 2);
    assert.equal(t.next.get(v.prefix)?.sinceMs, 4000);
    t = trackVips(t.next, [out(true)], 5000);
    t = trackVips(t.next, [], 6000);
    assert.deepEqual(t.changes, [
      { prefix: v.prefix, announced: false, reason: "no longer configured" },
    ]);
    assert.equal(t.next.size, 0);
    // Announced on first sight: one transition (every VIP starts withdrawn).
    assert.equal(trackVips(new Map(), [out(true)], 1).next.get(v.prefix)?.transitions, 1);
  });
});

describe("BIRD's replies", () => {
  // Captured from BIRD 2.0.12 (birdc -v), trimmed.
  const PROTOCOLS_ALL = `0001 BIRD 2.0.12 ready.
2002-Name       Proto      Table      State  Since         Info
1002-nflb_bfd   BFD        ---        up     19:02:59.388  
1006-
1002-nflb_vip4  Static     nflb4      up     19:02:59.388  
1006-  Channel ipv4
         State:          UP
     
1002-nflb_10_73_0_1 BGP        ---        up     19:02:59.931  Established   
1006-  Description:    nflb: VIPs to 10.73.0.1
       Router ID:      10.73.0.254
       BGP state:          Established
         Neighbor address: 10.73.0.1
         Neighbor AS:      65000
         Hold timer:       7.219/9
       Channel ipv4
         State:          UP
     
1002-nflb_fd73__1 BGP        ---        start  2026-11-28 19:03:00.964  Active        Received: Administrative shutdown
1006-  Description:    nflb: VIPs to fd73::1
       BGP state:          Active
         Neighbor address: fd73::1
         Connect delay:    3.905/5
         Last error:       Received: Administrative shutdown
       Channel ipv6
     
0000 
`;
  const PROTOCOLS = `0001 BIRD 2.0.12 ready.
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     19:02:59.027  
     nflb_bfd   BFD        ---        up     19:02:59.388  
     nflb_10_73_0_1 BGP        ---        start  19:03:00.964  Active        Received: Administrative shutdown
0000 
`;
  const BFD = `0001 BIRD 2.0.12 ready.
1020-nflb_bfd:
     IP address                Interface  State      Since         Interval  Timeout
     10.73.0.1                 eth0       Up         19:02:59.743    0.100    0.300
     fd73::1                   eth0       Down       19:03:00.964    1.000    0.000
0000 
`;

  test("show protocols all: rows and BGP details", () => {
    const p = parseProtocols(parseReply(PROTOCOLS_ALL));
    assert.deepEqual(
      p.map((x) => [
        x.name,
        x.proto,
        x.state,
        x.since,
        x.info,
        x.bgpState,
        x.neighborAddress,
        x.lastError,
      ]),
      [
        ["nflb_bfd", "BFD", "up", "19:02:59.388", "", undefined, undefined, undefined],
        ["nflb_vip4", "Static", "up", "19:02:59.388", "", undefined, undefined, undefined],
        [
          "nflb_10_73_0_1",
          "BGP",
          "up",
          "19:02:59.931",
          "Established",
          "Established",
          "10.73.0.1",
          undefined,
        ],
        [
          "nflb_fd73__1",
          "BGP",
          "start",
          "2026-11-28 19:03:00.964",
          "Active        Received: Administrative shutdown",
          "Active",
          "fd73::1",
          "Received: Administrative shutdown",
        ],
      ],
    );
  });

  test("show protocols: continuation rows are protocols too", () => {
    assert.deepEqual(
      parseProtocols(parseReply(PROTOCOLS)).map((x) => [x.name, x.state]),
      [
        ["device1", "up"],
        ["nflb_bfd", "up"],
        ["nflb_10_73_0_1", "start"],
      ],
    );
  });

  test("show bfd sessions", () => {
    assert.deepEqual(
      [...parseBfdSessions(parseReply(BFD))],
      [
        ["10.73.0.1", "Up"],
        ["fd73::1", "Down"],
      ],
    );
  });

  test("an error reply keeps its code and one-line text", () => {
    const lines = parseReply(
      "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /etc/bird/bird.conf\n8002 /etc/bird/nflb.conf:35:57 syntax error, unexpected CF_SYM_UNDEFINED\n",
    );
    assert.deepEqual(lines.at(-1), {
      code: 8002,
      text: "/etc/bird/nflb.conf:35:57 syntax error, unexpected CF_SYM_UNDEFINED",
    });
  });

  test("BIRD's times: time of day today (or yesterday), dates, ISO long", () => {
    const now = new Date(2026, 10, 29, 12, 0, 0, 0).getTime();
    assert.equal(
      parseBirdTime("11:59:58.250", now),
      new Date(2026, 10, 29, 11, 59, 58, 250).getTime(),
    );
    assert.equal(parseBirdTime("23:00:00.000", now), new Date(2026, 10, 28, 23, 0, 0, 0).getTime());
    assert.equal(parseBirdTime("2026-11-27", now), new Date(2026, 10, 27).getTime());
    assert.equal(
      parseBirdTime("2026-11-27 08:01:02.5", now),
      new Date(2026, 10, 27, 8, 1, 2, 500).getTime(),
    );
    assert.equal(parseBirdTime("soon", now), undefined);
  });
});

describe("reaching BIRD", () => {
  test("missing, not running, stale socket: one clear line each", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nflb-bgp-unit-"));
    try {
      await assert.rejects(
        birdc(join(dir, "x.ctl"), ["show", "status"], { birdc: join(dir, "birdc") }),
        {
          name: "BgpError",
          kind: "missing",
          message: `BIRD is not installed: ${join(dir, "birdc")} not found (Debian: apt-get install bird2)`,
        },
      );
      await assert.rejects(birdc(join(dir, "bird.ctl"), ["show", "status"]), {
        kind: "down",
        message: `BIRD is not running: no control socket at ${join(dir, "bird.ctl")}`,
      });
      // Not a listening socket (a dead BIRD's leftover behaves the same).
      writeFileSync(join(dir, "stale.ctl"), "");
      await assert.rejects(birdc(join(dir, "stale.ctl"), ["show", "status"]), {
        kind: "down",
        message: `BIRD is not running: control socket ${join(dir, "stale.ctl")} refuses connections (a stale socket?)`,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
