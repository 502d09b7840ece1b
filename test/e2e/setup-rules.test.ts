// `nflb setup` / `nflb teardown` rule sets in a real namespace, without traffic: every
// mode applies and removes cleanly (byte for byte), is idempotent, replaces, rolls back,
// and leaves foreign tables, rules, routes and network devices alone.
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import type { SetupSpec } from "../../src/netfilter/index.js";
import { isRoot, link, type Netns, Topology } from "../helpers/netns.js";
import { netfilter, netfilterCall } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

function spec(over: Partial<SetupSpec>): SetupSpec {
  return {
    name: "rules",
    mode: "nat",
    vips: ["10.200.0.1"],
    targets: [1, 2, 3].map((i) => ({ fwmark: i, address: `10.100.0.2${i}`, weight: 1 })),
    queue: { first: 0, last: 0 },
    queueBypass: false,
    synOnly: false,
    protocols: [],
    ports: "",
    statistic: "nth",
    snat: false,
    ...over,
  };
}

const v6 = {
  vips: ["fd00:200::1", "fd00:201::/64"],
  targets: [1, 2, 3].map((i) => ({ fwmark: 10 + i, address: `fd00:100::2${i}`, weight: i })),
};

const CASES: [string, SetupSpec][] = [
  [
    "nat IPv4 --syn-only --snat, queue range, ports",
    spec({
      synOnly: true,
      snat: true,
      queue: { first: 2, last: 5 },
      queueBypass: true,
      protocols: ["tcp", "udp"],
      ports: "80,443,8000-8100",
    }),
  ],
  ["nat IPv6", spec({ ...v6, protocols: ["sctp"] })],
  ["dsr IPv4", spec({ mode: "dsr", queueBypass: true, ports: "53" })],
  ["dsr IPv6", spec({ mode: "dsr", ...v6, rulePriority: 77 })],
  ["statistic IPv4 nth", spec({ mode: "statistic", protocols: ["tcp"], ports: "80" })],
  ["statistic IPv6 random", spec({ mode: "statistic", statistic: "random", ...v6, snat: true })],
  [
    "dsr IPv4 --fragments",
    spec({
      mode: "dsr",
      queueBypass: true,
      queue: { first: 0, last: 1 },
      protocols: ["udp"],
      fragments: { queue: 2, tun: "nflb-rules" },
    }),
  ],
  ["dsr IPv6 --fragments", spec({ mode: "dsr", ...v6, fragments: { queue: 9, tun: "frag.tun6" } })],
  [
    "dsr IPv4 --fragments --tier-peer, --proto --ports (ICMP rules)",
    spec({
      mode: "dsr",
      protocols: ["tcp", "udp"],
      ports: "8080",
      fragments: { queue: 1, tun: "nflb-rules" },
      tierPeers: [
        { fwmark: 102, address: "10.100.0.3" },
        { fwmark: 103, address: "10.100.0.4" },
      ],
    }),
  ],
  [
    "dsr IPv6 --fragments --tier-peer, --proto (ICMPv6 rules)",
    spec({
      mode: "dsr",
      ...v6,
      protocols: ["sctp"],
      fragments: { queue: 9, tun: "nflb-rules" },
      tierPeers: [{ fwmark: 101, address: "fd00:100::3" }],
    }),
  ],
];
const FRAG4 = CASES[6][1];
const TIER4 = CASES[8][1];

/** Everything setup may touch, as text. */
function snapshot(ns: Netns): string {
  const noComments = (s: string) =>
    s
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .join("\n");
  return [
    ns.exec("nft", ["list", "ruleset"]),
    noComments(ns.exec("iptables-nft-save", [])),
    noComments(ns.exec("ip6tables-nft-save", [])),
    ns.exec("ip", ["-4", "rule"]),
    ns.exec("ip", ["-6", "rule"]),
    ns.exec("ip", ["-4", "route", "show", "table", "all"]),
    ns.exec("ip", ["-6", "route", "show", "table", "all"]),
    ns.exec("ip", ["-d", "link", "show"]),
    ns.exec("sysctl", ["-a", "--pattern", "^net\\.ipv4\\.conf\\..*\\.rp_filter$"]),
  ].join("\n-----\n");
}

/** Counters zeroed: IPv6 neighbour discovery and the like pass the hooks meanwhile. */
function withoutCounters(text: string): string {
  return text.replace(/packets \d+ bytes \d+/g, "packets - bytes -");
}

/**
 * Also order-insensitive: a replaced nft table moves to the end of the list, and a
 * re-added ip rule goes after the others of the same preference; and a re-created
 * device's interface index does not count.
 */
function sortedSnapshot(ns: Netns): string {
  const [nft, ...rest] = withoutCounters(snapshot(ns))
    .replace(/^\d+: (?=\S+: <)/gm, "N: ")
    .split("\n-----\n");
  const tables = nft
    .split(/^(?=table )/m)
    .map((t) => t.trim())
    .sort();
  const lines = rest.map((section) => section.split("\n").sort().join("\n"));
  return [tables.join("\n"), ...lines].join("\n-----\n");
}

function addForeign(ns: Netns): void {
  ns.exec(
    "nft",
    ["-f", "-"],
    `table inet foreign {
  chain input { type filter hook input priority 0; policy accept; tcp dport 22 counter accept; }
}
`,
  );
  // A foreign iptables rule: mangle PREROUTING exists before nflb and must stay.
  ns.exec("iptables-nft", [
    "-t",
    "mangle",
    "-A",
    "PREROUTING",
    "-s",
    "192.0.2.1",
    "-j",
    "MARK",
    "--set-mark",
    "7",
  ]);
  ns.exec("ip6tables-nft", ["-t", "nat", "-A", "OUTPUT", "-d", "2001:db8::1", "-j", "RETURN"]);
  ns.exec("ip", ["rule", "add", "pref", "1000", "fwmark", "7", "table", "7"]);
  ns.exec("ip", ["route", "add", "default", "via", "10.100.0.99", "table", "7"]);
  ns.exec("ip", ["-6", "rule", "add", "fwmark", "7", "table", "7"]);
}

describe("setup/teardown rule sets", { skip }, () => {
  const topo = new Topology();
  let lb: Netns;

  before(async () => {
    lb = topo.add("lb");
    const peer = topo.add("peer");
    for (const ns of [lb, peer]) {
      ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
      ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
    }
    link(lb, "eth0", ["10.100.0.1/24", "fd00:100::1/64"], peer, "eth0", [
      "10.100.0.2/24",
      "fd00:100::2/64",
    ]);
    // The link-local address (and its local route) appears a moment after the link is
    // up; snapshots taken before that would differ for no fault of setup.
    for (let i = 0; i < 50; i++) {
      const ll = lb.exec("ip", ["-6", "addr", "show", "dev", "eth0", "scope", "link"]);
      const routes = lb.exec("ip", ["-6", "route", "show", "table", "local"]);
      if (ll.trim() && !ll.includes("tentative") && routes.includes("fe80::")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  // A failed test must not leave its setup to the next one.
  afterEach(() => {
    for (const name of ["rules", "other"]) netfilterCall(lb, "teardown", name);
  });
  after(() => topo.destroy());

  for (const foreign of [false, true]) {
    describe(foreign ? "with foreign rules present" : "in a clean namespace", () => {
      before(() => {
        if (foreign) addForeign(lb);
      });

      for (const [label, s] of CASES) {
        test(`${label}: applied, idempotent, removed byte for byte`, () => {
          const clean = snapshot(lb);
          netfilter(lb, "setup", s);
          const applied = snapshot(lb);
          assert.notEqual(applied, clean);
          assert.match(applied, /table inet nflb_rules \{/);
          assert.match(applied, /:NFLB-rules - \[0:0\]/);
          if (s.mode === "dsr") assert.match(applied, /fwmark 0x\w+ lookup \d+/);
          if (s.protocols.length > 0 || s.ports !== "") {
            // ICMP for the VIPs is queued (nat, dsr) or balanced (statistic) by rules of its own.
            const six = s.vips[0].includes(":");
            const type = six ? "--icmpv6-type 128" : "--icmp-type 8"; // echo-request
            assert.match(
              applied,
              new RegExp(`-p ${six ? "ipv6-icmp -m icmp6" : "icmp -m icmp"} ${type}`),
            );
            if (s.mode === "dsr")
              assert.match(applied, /-m comment --comment "?nflb:rules:icmp"? -j NFQUEUE/);
            if (s.mode === "dsr" && six) assert.match(applied, /--icmpv6-type 2 /); // packet-too-big
          }
          for (const p of s.tierPeers ?? []) {
            assert.match(
              applied,
              new RegExp(`fwmark 0x${p.fwmark.toString(16)} lookup ${p.fwmark}\\b`),
            );
            assert.match(
              applied,
              new RegExp(`default via ${p.address} dev eth0 table ${p.fwmark}\\b`),
            );
          }
          if (s.fragments) {
            const tun = s.fragments.tun;
            assert.doesNotMatch(clean, new RegExp(`: ${tun}:`));
            const dev = lb.exec("ip", ["-d", "link", "show", "dev", tun]);
            assert.match(dev, /<NO-CARRIER,POINTOPOINT,MULTICAST,NOARP,UP>/);
            assert.match(dev, /tun type tun pi off vnet_hdr off persist on addrgenmode none/);
            assert.match(dev, /alias nflb:rules:fragments/);
            assert.match(
              applied,
              /chain fragments_prerouting \{\n\t\ttype filter hook prerouting priority -450;/,
            );
            assert.match(applied, /-m mark --mark 0x6e666c62 .*-j NFQUEUE --queue-num \d+/);
            if (s === FRAG4) assert.match(applied, new RegExp(`conf\\.${tun}\\.rp_filter = 0`));
          }
          assert.deepEqual(netfilter(lb, "readSetupRecord", "rules"), s);

          netfilter(lb, "setup", s);
          assert.equal(
            withoutCounters(snapshot(lb)),
            withoutCounters(applied),
            "second setup changed the rules",
          );

          assert.equal(netfilter(lb, "teardown", "rules"), true);
          assert.equal(snapshot(lb), clean);
          assert.equal(netfilter(lb, "teardown", "rules"), false);
          assert.equal(netfilter(lb, "readSetupRecord", "rules"), null);
        });
      }

      test("setting up the same again changes nothing; a damaged rule set is repaired", () => {
        const s = CASES[2][1]; // dsr: all three kinds of objects
        const handle = () =>
          /table inet nflb_rules \{ # handle (\d+)/.exec(
            lb.exec("nft", ["-a", "list", "ruleset"]),
          )?.[1];
        netfilter(lb, "setup", s);
        const applied = sortedSnapshot(lb);
        const first = handle();
        netfilter(lb, "setup", s);
        // Not even replaced (which would reset counters and the nth state).
        assert.equal(handle(), first);
        lb.exec("nft", ["delete", "table", "inet", "nflb_rules"]);
        lb.exec("ip", ["rule", "del", "pref", "1000", "fwmark", "2", "table", "2"]);
        lb.exec("iptables-nft", ["-t", "mangle", "-D", "OUTPUT", "-j", "NFLB-rules"]);
        netfilter(lb, "setup", s);
        assert.equal(sortedSnapshot(lb), applied);
        assert.equal(netfilter(lb, "teardown", "rules"), true);
      });

      test("--fragments: the TUN device is kept on re-setup and repaired when damaged", () => {
        const clean = snapshot(lb);
        const tun = "nflb-rules";
        const ifindex = () => lb.exec("cat", [`/sys/class/net/${tun}/ifindex`]).trim();
        netfilter(lb, "setup", FRAG4);
        const applied = sortedSnapshot(lb);
        const first = ifindex();
        netfilter(lb, "setup", FRAG4);
        assert.equal(ifindex(), first, "re-setup re-created the TUN device");
        // Down, strict rp_filter, an IPv6 link-local address mode: all put right, same device.
        lb.exec("ip", ["link", "set", "dev", tun, "down", "addrgenmode", "random"]);
        lb.sysctl(`net.ipv4.conf.${tun}.rp_filter`, "1");
        netfilter(lb, "setup", FRAG4);
        assert.equal(ifindex(), first);
        assert.equal(sortedSnapshot(lb), applied);
        // Gone: created again.
        lb.exec("ip", ["link", "del", "dev", tun]);
        netfilter(lb, "setup", FRAG4);
        assert.notEqual(ifindex(), first);
        assert.equal(sortedSnapshot(lb), applied);
        assert.equal(netfilter(lb, "teardown", "rules"), true);
        assert.equal(snapshot(lb), clean);
      });

      test("--fragments: another TUN name replaces the device; fragments off removes it", () => {
        const clean = snapshot(lb);
        netfilter(lb, "setup", FRAG4);
        const other = { ...FRAG4, fragments: { queue: 7, tun: "nflb-other" } };
        netfilter(lb, "setup", other);
        const links = lb.exec("ip", ["link", "show"]);
        assert.doesNotMatch(links, /nflb-rules/);
        assert.match(links, /nflb-other/);
        assert.match(lb.exec("iptables-nft-save", ["-t", "mangle"]), /--queue-num 7/);
        const { fragments: _, ...plain } = other;
        netfilter(lb, "setup", plain);
        assert.doesNotMatch(lb.exec("ip", ["link", "show"]), /nflb-/);
        assert.doesNotMatch(snapshot(lb), /fragments_prerouting|0x6e666c62/);
        netfilter(lb, "teardown", "rules");
        assert.equal(snapshot(lb), clean);
      });

      test("--fragments: a device of the TUN's name that is not ours is refused and kept", () => {
        for (const make of [
          ["ip", "tuntap", "add", "dev", "nflb-rules", "mode", "tun"],
          ["ip", "link", "add", "nflb-rules", "type", "veth", "peer", "name", "nflb-peer"],
        ]) {
          lb.exec(make[0], make.slice(1));
          try {
            const clean = snapshot(lb);
            const r = netfilterCall(lb, "setup", FRAG4);
            assert.equal(r.ok, false);
            assert.match(
              r.ok ? "" : r.error,
              /network device nflb-rules exists already and is not this setup's TUN device \((tun|veth)\): choose another --frag-tun/,
            );
            assert.equal(snapshot(lb), clean);
          } finally {
            lb.exec("ip", ["link", "del", "dev", "nflb-rules"]);
          }
        }
      });

      test("teardown after the rules were partly removed by hand", () => {
        const clean = snapshot(lb);
        netfilter(lb, "setup", CASES[2][1]);
        lb.exec("nft", ["delete", "table", "inet", "nflb_rules"]);
        lb.exec("ip", ["route", "del", "default", "table", "3"]);
        assert.equal(netfilter(lb, "teardown", "rules"), true);
        assert.equal(snapshot(lb), clean);
      });

      // Once, with foreign rules present: the harder case.
      if (foreign) {
        test("a dsr target that changed its address gets its route replaced", () => {
          const clean = snapshot(lb);
          const [, dsr] = CASES[2];
          const moved = (a: string) => ({
            ...dsr,
            targets: dsr.targets.map((t) => (t.fwmark === 3 ? { ...t, address: a } : t)),
          });
          netfilter(lb, "setup", moved("10.100.0.24"));
          const fresh = sortedSnapshot(lb);
          netfilter(lb, "teardown", "rules");
          netfilter(lb, "setup", dsr);
          netfilter(lb, "setup", moved("10.100.0.24"));
          assert.equal(sortedSnapshot(lb), fresh);
          const r = netfilterCall(lb, "setup", moved("10.100.0.25"), { failAt: "after-iptables" });
          assert.equal(r.ok, false);
          assert.equal(sortedSnapshot(lb), fresh);
          netfilter(lb, "teardown", "rules");
          assert.equal(snapshot(lb), clean);
        });

        for (const point of ["exit-after-ip", "exit-after-nft", "exit-after-iptables"] as const) {
          test(`a setup that died (${point}) is cleared by teardown, or replaced by setup`, () => {
            const clean = snapshot(lb);
            // --fragments adds the TUN device to what a crash leaves behind.
            const dsr = point === "exit-after-ip" ? FRAG4 : CASES[2][1];
            assert.throws(() => netfilterCall(lb, "setup", dsr, { failAt: point }), /failed/);
            assert.deepEqual(netfilter(lb, "readSetupRecord", "rules"), dsr);
            assert.equal(netfilter(lb, "teardown", "rules"), true);
            assert.equal(snapshot(lb), clean);

            assert.throws(() => netfilterCall(lb, "setup", dsr, { failAt: point }), /failed/);
            netfilter(lb, "setup", CASES[0][1]);
            assert.doesNotMatch(snapshot(lb), /fwmark 0x[123] lookup/);
            assert.equal(netfilter(lb, "teardown", "rules"), true);
            assert.equal(snapshot(lb), clean);
          });
        }
      }

      test("changed options replace the earlier rules", () => {
        const clean = snapshot(lb);
        const [, dsr] = CASES[2];
        netfilter(lb, "setup", dsr);
        const dsrOnly = sortedSnapshot(lb);
        netfilter(lb, "teardown", "rules");
        // nat IPv6 -> dsr IPv4: other family, other iptables table, ip rules added.
        netfilter(lb, "setup", CASES[1][1]);
        netfilter(lb, "setup", dsr);
        assert.equal(sortedSnapshot(lb), dsrOnly);
        // dsr -> statistic: ip rules and routes go.
        netfilter(lb, "setup", CASES[4][1]);
        assert.doesNotMatch(snapshot(lb), /fwmark 0x[123] lookup/);
        netfilter(lb, "teardown", "rules");
        assert.equal(snapshot(lb), clean);
      });

      test("two setups share the builtin chains; each teardown removes only its own", () => {
        const clean = snapshot(lb);
        const other = spec({ name: "other", vips: ["10.201.0.1"] });
        netfilter(lb, "setup", other);
        const otherOnly = sortedSnapshot(lb);
        netfilter(lb, "setup", CASES[0][1]);
        assert.equal(netfilter(lb, "teardown", "rules"), true);
        assert.equal(sortedSnapshot(lb), otherOnly);
        netfilter(lb, "setup", CASES[0][1]);
        assert.equal(netfilter(lb, "teardown", "other"), true);
        assert.equal(netfilter(lb, "teardown", "rules"), true);
        assert.equal(snapshot(lb), clean);
      });

      for (const failAt of ["after-ip", "after-nft", "after-iptables"] as const) {
        for (const [label, s] of [CASES[0], CASES[3], CASES[6], CASES[8]]) {
          test(`${label}: failure ${failAt} rolls back to nothing`, () => {
            const clean = snapshot(lb);
            const r = netfilterCall(lb, "setup", s, { failAt });
            assert.equal(r.ok, false);
            assert.match(r.ok ? "" : r.error, /failed and was rolled back: injected failure/);
            assert.equal(snapshot(lb), clean);
            assert.equal(netfilter(lb, "readSetupRecord", "rules"), null);
          });
        }
        test(`failure ${failAt} while replacing puts the earlier setup back`, () => {
          const clean = snapshot(lb);
          netfilter(lb, "setup", CASES[0][1]);
          const earlier = sortedSnapshot(lb);
          const r = netfilterCall(lb, "setup", CASES[2][1], { failAt });
          assert.equal(r.ok, false);
          assert.equal(sortedSnapshot(lb), earlier);
          assert.deepEqual(netfilter(lb, "readSetupRecord", "rules"), CASES[0][1]);
          netfilter(lb, "teardown", "rules");
          assert.equal(snapshot(lb), clean);
        });
      }

      test("preflight failures change nothing", () => {
        const clean = snapshot(lb);
        const bad: [SetupSpec, RegExp][] = [
          [spec({ vips: ["10.200.0.1/24"] }), /host bits set/],
          [spec({ ports: "80,0" }), /ports: port 0 is not a service port/],
          [spec({ vips: ["fd00:200::1"] }), /address family differs/],
          // Not on a connected network: `ip route add ... via` would fail half-way.
          [
            spec({
              mode: "dsr",
              targets: [
                { fwmark: 1, address: "10.100.0.21", weight: 1 },
                { fwmark: 2, address: "192.0.2.77", weight: 1 },
              ],
            }),
            /192\.0\.2\.77 is not on a directly connected network/,
          ],
          [
            { ...TIER4, tierPeers: [{ fwmark: 102, address: "192.0.2.78" }] },
            /tier peer 192\.0\.2\.78 is not on a directly connected network/,
          ],
          [
            { ...TIER4, tierPeers: [{ fwmark: 2, address: "10.100.0.3" }] },
            /fwmark 2 is also the fwmark of target 10\.100\.0\.22/,
          ],
        ];
        for (const [s, re] of bad) {
          const r = netfilterCall(lb, "setup", s);
          assert.equal(r.ok, false);
          assert.equal(r.ok ? "" : r.name, "SetupError");
          assert.match(r.ok ? "" : r.error, re);
          assert.equal(snapshot(lb), clean);
        }
      });

      test("a foreign default route in a dsr table is refused, and kept", () => {
        for (const [s, table, re] of [
          [CASES[2][1], 2, /routing table 2 \(fwmark 2, dsr target 10\.100\.0\.22\) already has/],
          [TIER4, 103, /routing table 103 \(fwmark 103, tier peer 10\.100\.0\.4\) already has/],
        ] as const) {
          lb.exec("ip", ["route", "add", "default", "via", "10.100.0.2", "table", String(table)]);
          try {
            const clean = snapshot(lb);
            const r = netfilterCall(lb, "setup", s);
            assert.equal(r.ok, false);
            assert.match(r.ok ? "" : r.error, re);
            assert.equal(snapshot(lb), clean);
          } finally {
            lb.exec("ip", ["route", "del", "default", "table", String(table)]);
          }
        }
      });

      test("--tier-peer: a peer that moved gets its route replaced; peers off remove theirs", () => {
        const clean = snapshot(lb);
        const moved = {
          ...TIER4,
          tierPeers: [
            { fwmark: 102, address: "10.100.0.3" },
            { fwmark: 103, address: "10.100.0.5" },
          ],
        };
        netfilter(lb, "setup", moved);
        const fresh = sortedSnapshot(lb);
        netfilter(lb, "teardown", "rules");
        netfilter(lb, "setup", TIER4);
        netfilter(lb, "setup", moved);
        assert.equal(sortedSnapshot(lb), fresh);
        // A failure rolls back to the earlier peers.
        const r = netfilterCall(
          lb,
          "setup",
          { ...TIER4, tierPeers: [{ fwmark: 102, address: "10.100.0.6" }] },
          { failAt: "after-iptables" },
        );
        assert.equal(r.ok, false);
        assert.equal(sortedSnapshot(lb), fresh);
        const { tierPeers: _, ...plain } = TIER4;
        netfilter(lb, "setup", plain);
        assert.doesNotMatch(snapshot(lb), /lookup 10[23]\b|table 10[23]\b|tier_10/);
        netfilter(lb, "teardown", "rules");
        assert.equal(snapshot(lb), clean);
      });
    });
  }
});
