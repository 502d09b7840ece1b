// renderSetup / validateSpec: the exact rule sets per mode and family, and the rejections.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  buildPlan,
  FRAGMENT_MARK,
  normalizeSpec,
  nthSlots,
  portChunks,
  renderSetup,
  SetupError,
  type SetupSpec,
  validateSpec,
} from "../../src/netfilter/index.js";
import { parsePorts } from "../../src/netfilter/validate.js";

function spec(over: Partial<SetupSpec> = {}): SetupSpec {
  return {
    name: "web",
    mode: "nat",
    vips: ["10.0.0.1"],
    targets: [
      { fwmark: 1, address: "192.168.1.1", weight: 1 },
      { fwmark: 2, address: "192.168.1.2", weight: 1 },
      { fwmark: 3, address: "192.168.1.3", weight: 1 },
    ],
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

const V6 = {
  vips: ["fd00::1", "fd00:1::/64"],
  targets: [
    { fwmark: 10, address: "fd00:100::0001", weight: 1 },
    { fwmark: 20, address: "FD00:100::2", weight: 3 },
  ],
};

/** The rules of one chain (lines between "chain NAME {" and its "}"), trimmed. */
function nftChain(script: string, name: string): string[] {
  const m = new RegExp(`\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(script);
  assert.ok(m, `chain ${name} missing`);
  return m[1].split("\n").map((l) => l.trim());
}

const args = (cmds: string[][]) => cmds.map((c) => c.join(" "));

describe("renderSetup nat", () => {
  test("IPv4 --syn-only --snat, queue range, ports", () => {
    const r = renderSetup(
      spec({
        synOnly: true,
        snat: true,
        queue: { first: 2, last: 5 },
        queueBypass: true,
        protocols: ["tcp"],
        ports: "80,8000-8100",
      }),
    );
    // ICMP: echo requests only (nat: conntrack takes errors to their flow's target).
    assert.deepEqual(args(r.iptables), [
      "iptables-nft -t mangle -N NFLB-web",
      "iptables-nft -t mangle -A NFLB-web -d 10.0.0.1/32 -p tcp -m multiport --dports 80,8000:8100 -m conntrack --ctstate NEW -m comment --comment nflb:web:queue -j NFQUEUE --queue-balance 2:5 --queue-bypass",
      "iptables-nft -t mangle -A NFLB-web -d 10.0.0.1/32 -p icmp -m icmp --icmp-type echo-request -m conntrack --ctstate NEW -m comment --comment nflb:web:icmp -j NFQUEUE --queue-balance 2:5 --queue-bypass",
      "iptables-nft -t mangle -A PREROUTING -j NFLB-web",
      "iptables-nft -t mangle -A OUTPUT -j NFLB-web",
    ]);
    assert.equal(
      r.iptablesRestore,
      [
        "*mangle",
        ":NFLB-web - [0:0]",
        "-A NFLB-web -d 10.0.0.1/32 -p tcp -m multiport --dports 80,8000:8100 -m conntrack --ctstate NEW -m comment --comment nflb:web:queue -j NFQUEUE --queue-balance 2:5 --queue-bypass",
        "-A NFLB-web -d 10.0.0.1/32 -p icmp -m icmp --icmp-type echo-request -m conntrack --ctstate NEW -m comment --comment nflb:web:icmp -j NFQUEUE --queue-balance 2:5 --queue-bypass",
        "-A PREROUTING -j NFLB-web",
        "-A OUTPUT -j NFLB-web",
        "COMMIT",
        "",
      ].join("\n"),
    );
    assert.deepEqual(r.ipRules, []);
    // Atomic replace of the table.
    assert.match(
      r.nft,
      /^table inet nflb_web\ndelete table inet nflb_web\ntable inet nflb_web \{$/m,
    );
    assert.match(r.nft, /elements = \{ 10\.0\.0\.1\/32 \}/);
    assert.match(
      r.nft,
      /type mark : ipv4_addr;\n\t\telements = \{ 1 : 192\.168\.1\.1, 2 : 192\.168\.1\.2, 3 : 192\.168\.1\.3 \}/,
    );
    const connmark = [
      "type filter hook prerouting priority mangle + 10; policy accept;",
      "ip daddr @vips ct state new meta mark @marks ct mark set meta mark",
      "ct direction original ct state established,related ip daddr @vips ct mark @marks meta mark set ct mark",
    ];
    assert.deepEqual(nftChain(r.nft, "connmark_prerouting"), connmark);
    assert.deepEqual(nftChain(r.nft, "connmark_output"), [
      "type route hook output priority mangle + 10; policy accept;",
      ...connmark.slice(1),
    ]);
    const dnat =
      "ip daddr @vips meta mark @marks counter name meta mark map @conn_counters dnat ip to meta mark map @target_addrs";
    assert.deepEqual(nftChain(r.nft, "dnat_prerouting"), [
      "type nat hook prerouting priority dstnat; policy accept;",
      dnat,
    ]);
    assert.deepEqual(nftChain(r.nft, "dnat_output"), [
      "type nat hook output priority -100; policy accept;",
      dnat,
    ]);
    assert.deepEqual(nftChain(r.nft, "snat_postrouting"), [
      "type nat hook postrouting priority srcnat; policy accept;",
      "ct status dnat ct original ip daddr @vips ip daddr @targets counter masquerade",
    ]);
    assert.deepEqual(nftChain(r.nft, "count_prerouting"), [
      "type filter hook prerouting priority dstnat + 10; policy accept;",
      "ct direction original ct original ip daddr @vips counter name ip daddr map @pkts_counters",
    ]);
  });

  test("without --syn-only and --snat: no connmark or masquerade chains, one queue", () => {
    const r = renderSetup(spec());
    assert.doesNotMatch(r.nft, /connmark_|snat_postrouting|ct mark set/);
    assert.deepEqual(args(r.iptables).slice(1, 2), [
      "iptables-nft -t mangle -A NFLB-web -d 10.0.0.1/32 -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 0",
    ]);
  });

  test("IPv6: ip6 matches, ipv6_addr types, ip6tables-nft, canonical addresses", () => {
    const r = renderSetup(spec({ ...V6, protocols: ["udp", "sctp"], ports: "53" }));
    assert.deepEqual(args(r.iptables), [
      "ip6tables-nft -t mangle -N NFLB-web",
      ...["fd00::1/128", "fd00:1::/64"].flatMap((vip) => [
        ...["udp", "sctp"].map(
          (p) =>
            `ip6tables-nft -t mangle -A NFLB-web -d ${vip} -p ${p} -m multiport --dports 53 -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 0`,
        ),
        `ip6tables-nft -t mangle -A NFLB-web -d ${vip} -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -m comment --comment nflb:web:icmp -j NFQUEUE --queue-num 0`,
      ]),
      "ip6tables-nft -t mangle -A PREROUTING -j NFLB-web",
      "ip6tables-nft -t mangle -A OUTPUT -j NFLB-web",
    ]);
    assert.match(
      r.nft,
      /type ipv6_addr; flags interval;\n\t\telements = \{ fd00::1\/128, fd00:1::\/64 \}/,
    );
    assert.match(r.nft, /elements = \{ 10 : fd00:100::1, 20 : fd00:100::2 \}/);
    assert.match(
      r.nft,
      /ip6 daddr @vips meta mark @marks .* dnat ip6 to meta mark map @target_addrs/,
    );
    assert.doesNotMatch(r.nft, /\bip daddr\b/);
  });
});

describe("renderSetup dsr", () => {
  test("IPv4: routes then rules, table = fwmark, mark counters", () => {
    const r = renderSetup(spec({ mode: "dsr", queueBypass: true }));
    assert.deepEqual(args(r.ipRules), [
      "ip -4 route add default via 192.168.1.1 table 1",
      "ip -4 route add default via 192.168.1.2 table 2",
      "ip -4 route add default via 192.168.1.3 table 3",
      "ip -4 rule add pref 1000 fwmark 1 table 1",
      "ip -4 rule add pref 1000 fwmark 2 table 2",
      "ip -4 rule add pref 1000 fwmark 3 table 3",
    ]);
    assert.match(args(r.iptables)[1], /-j NFQUEUE --queue-num 0 --queue-bypass$/);
    assert.doesNotMatch(r.nft, /dnat|\bct\b|masquerade/);
    assert.deepEqual(nftChain(r.nft, "count_prerouting"), [
      "type filter hook prerouting priority mangle + 10; policy accept;",
      "ip daddr @vips meta mark @marks counter name meta mark map @pkts_counters",
    ]);
  });

  test("IPv6 with a rule priority", () => {
    const r = renderSetup(spec({ mode: "dsr", ...V6, rulePriority: 77 }));
    assert.deepEqual(args(r.ipRules), [
      "ip -6 route add default via fd00:100::1 table 10",
      "ip -6 route add default via fd00:100::2 table 20",
      "ip -6 rule add pref 77 fwmark 10 table 10",
      "ip -6 rule add pref 77 fwmark 20 table 20",
    ]);
    assert.match(r.nft, /ip6 daddr @vips meta mark @marks counter/);
  });
});

describe("renderSetup: ICMP for the VIPs with --proto/--ports", () => {
  const queueRules = (r: ReturnType<typeof renderSetup>) =>
    args(r.iptables).filter((c) => c.includes("-j NFQUEUE"));

  test("dsr IPv4: per VIP the protocol rules, then the quoting errors and echo", () => {
    const r = renderSetup(
      spec({
        mode: "dsr",
        vips: ["10.0.0.1", "10.0.1.0/24"],
        protocols: ["tcp"],
        ports: "8080",
      }),
    );
    const icmp = (vip: string, type: string) =>
      `iptables-nft -t mangle -A NFLB-web -d ${vip} -p icmp -m icmp --icmp-type ${type} -m comment --comment nflb:web:icmp -j NFQUEUE --queue-num 0`;
    const types = ["destination-unreachable", "time-exceeded", "parameter-problem", "echo-request"];
    assert.deepEqual(
      queueRules(r),
      ["10.0.0.1/32", "10.0.1.0/24"].flatMap((vip) => [
        `iptables-nft -t mangle -A NFLB-web -d ${vip} -p tcp -m multiport --dports 8080 -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 0`,
        ...types.map((t) => icmp(vip, t)),
      ]),
    );
    // The restore text takes the same rules (type names need no quoting).
    assert.match(
      r.iptablesRestore,
      /^-A NFLB-web -d 10\.0\.0\.1\/32 -p icmp -m icmp --icmp-type destination-unreachable -m comment --comment nflb:web:icmp -j NFQUEUE --queue-num 0$/m,
    );
  });

  test("dsr IPv6: packet-too-big too, ip6tables' icmp6 match", () => {
    const r = renderSetup(spec({ mode: "dsr", ...V6, vips: ["fd00::1"], protocols: ["udp"] }));
    assert.deepEqual(queueRules(r), [
      "ip6tables-nft -t mangle -A NFLB-web -d fd00::1/128 -p udp -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 0",
      ...[
        "destination-unreachable",
        "packet-too-big",
        "time-exceeded",
        "parameter-problem",
        "echo-request",
      ].map(
        (t) =>
          `ip6tables-nft -t mangle -A NFLB-web -d fd00::1/128 -p ipv6-icmp -m icmp6 --icmpv6-type ${t} -m comment --comment nflb:web:icmp -j NFQUEUE --queue-num 0`,
      ),
    ]);
  });

  test("nat: echo requests only; the queue options apply to them as well", () => {
    const r = renderSetup(
      spec({ protocols: ["udp"], queue: { first: 1, last: 3 }, queueBypass: true }),
    );
    assert.deepEqual(queueRules(r).slice(1), [
      "iptables-nft -t mangle -A NFLB-web -d 10.0.0.1/32 -p icmp -m icmp --icmp-type echo-request -m comment --comment nflb:web:icmp -j NFQUEUE --queue-balance 1:3 --queue-bypass",
    ]);
  });

  test("without protocols or ports everything is queued by one rule per VIP, ICMP included", () => {
    for (const mode of ["nat", "dsr"] as const) {
      const r = renderSetup(spec({ mode, vips: ["10.0.0.1", "10.0.2.0/24"] }));
      assert.deepEqual(queueRules(r), [
        "iptables-nft -t mangle -A NFLB-web -d 10.0.0.1/32 -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 0",
        "iptables-nft -t mangle -A NFLB-web -d 10.0.2.0/24 -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 0",
      ]);
      assert.doesNotMatch(r.iptablesRestore, /icmp/);
    }
    const st = renderSetup(spec({ mode: "statistic" }));
    assert.deepEqual(
      args(st.iptables).filter((c) => c.includes("-j NFLB-web-LB")),
      ["iptables-nft -t nat -A NFLB-web -d 10.0.0.1/32 -j NFLB-web-LB"],
    );
  });
});

describe("renderSetup dsr --tier-peer", () => {
  const tier = (over: Partial<SetupSpec> = {}) =>
    spec({
      mode: "dsr",
      fragments: { queue: 1, tun: "nflb-web" },
      tierPeers: [
        { fwmark: 102, address: "192.168.1.102" },
        { fwmark: 103, address: "192.168.1.103" },
      ],
      ...over,
    });

  test("routes and rules like the targets', counted by mark", () => {
    const r = renderSetup(tier());
    assert.deepEqual(args(r.ipRules).slice(3), [
      ...[1, 2, 3].map((m) => `ip -4 route add default via 192.168.1.${m} table ${m}`),
      "ip -4 route add default via 192.168.1.102 table 102",
      "ip -4 route add default via 192.168.1.103 table 103",
      ...[1, 2, 3].map((m) => `ip -4 rule add pref 1000 fwmark ${m} table ${m}`),
      "ip -4 rule add pref 1000 fwmark 102 table 102",
      "ip -4 rule add pref 1000 fwmark 103 table 103",
    ]);
    assert.match(r.nft, /set marks \{\n\t\ttype mark;\n\t\telements = \{ 1, 2, 3, 102, 103 \}/);
    assert.match(r.nft, /\tcounter tier_102 \{ comment "192\.168\.1\.102"; \}/);
    assert.match(
      r.nft,
      /elements = \{ 1 : "pkts_1", 2 : "pkts_2", 3 : "pkts_3", 102 : "tier_102", 103 : "tier_103" \}/,
    );
    // The queue rules do not change.
    const { tierPeers: _, ...plain } = tier();
    assert.deepEqual(r.iptables, renderSetup(plain).iptables);
  });

  test("IPv6, canonical addresses, rule priority", () => {
    const r = renderSetup(
      tier({ ...V6, rulePriority: 50, tierPeers: [{ fwmark: 7, address: "FD00:100::0007" }] }),
    );
    assert.deepEqual(
      args(r.ipRules).filter((c) => /table 7$/.test(c)),
      [
        "ip -6 route add default via fd00:100::7 table 7",
        "ip -6 rule add pref 50 fwmark 7 table 7",
      ],
    );
  });

  test("the plan records the peers; without them there is no key (records compare deeply)", () => {
    assert.deepEqual(buildPlan(normalizeSpec(tier())).tierPeers, [
      { fwmark: 102, address: "192.168.1.102" },
      { fwmark: 103, address: "192.168.1.103" },
    ]);
    const { tierPeers: _, ...plain } = tier();
    assert.equal("tierPeers" in buildPlan(normalizeSpec(plain)), false);
    assert.equal("tierPeers" in buildPlan(normalizeSpec({ ...plain, tierPeers: [] })), false);
  });

  test("rejections", () => {
    const rejects = (over: Partial<SetupSpec>, re: RegExp) =>
      assert.throws(
        () => validateSpec(tier(over)),
        (err: unknown) => err instanceof SetupError && re.test(err.message),
        `expected ${re} for ${JSON.stringify(over)}`,
      );
    const peer = (fwmark: number, address = "192.168.1.200") => [{ fwmark, address }];
    rejects({ tierPeers: peer(2) }, /fwmark 2 is also the fwmark of target 192\.168\.1\.2/);
    rejects(
      { tierPeers: peer(FRAGMENT_MARK) },
      /1852206178 \(0x6e666c62\) is reserved for fragments/,
    );
    rejects({ tierPeers: peer(0) }, /tier peer .*fwmark must be an integer 1\.\.4294967295/);
    rejects({ tierPeers: peer(254) }, /253-255 are the kernel's/);
    rejects(
      { tierPeers: [...peer(102), ...peer(102, "192.168.1.201")] },
      /fwmark 102 is used by more than one tier peer/,
    );
    rejects(
      { tierPeers: [...peer(102), ...peer(103)] },
      /tier peer address 192\.168\.1\.200 is listed twice/,
    );
    rejects({ tierPeers: peer(102, "192.168.1.3") }, /192\.168\.1\.3 is also a target's address/);
    rejects({ tierPeers: peer(102, "fd00::9") }, /tier peer .*address family differs/);
    rejects({ tierPeers: peer(102, "10.0.0.1") }, /tier peer .*inside VIP 10\.0\.0\.1\/32/);
    rejects({ tierPeers: peer(102, "224.0.0.1") }, /a peer must be a unicast address/);
    rejects({ tierPeers: peer(102, "x") }, /tier peer "x" .*not an IPv4\/IPv6 address/);
    rejects({ fragments: undefined }, /--tier-peer needs --fragments/);
    rejects({ mode: "nat", fragments: undefined }, /--tier-peer needs --mode dsr/);
    rejects({ tierPeers: "x" as unknown as [] }, /tierPeers must be a list/);
    validateSpec(tier());
  });
});

describe("renderSetup statistic", () => {
  test("nth round robin: every 3, every 2, the rest", () => {
    const r = renderSetup(spec({ mode: "statistic", protocols: ["tcp", "udp"], ports: "80" }));
    const dnat = (m: number) =>
      `-m comment --comment nflb:web:fwmark=${m} -j DNAT --to-destination 192.168.1.${m}`;
    assert.deepEqual(args(r.iptables), [
      "iptables-nft -t nat -N NFLB-web",
      "iptables-nft -t nat -N NFLB-web-LB",
      "iptables-nft -t nat -A NFLB-web -d 10.0.0.1/32 -p tcp -m multiport --dports 80 -j NFLB-web-LB",
      "iptables-nft -t nat -A NFLB-web -d 10.0.0.1/32 -p udp -m multiport --dports 80 -j NFLB-web-LB",
      // Ping to the VIP is balanced too (conntrack keeps one ping to one target).
      "iptables-nft -t nat -A NFLB-web -d 10.0.0.1/32 -p icmp -m icmp --icmp-type echo-request -j NFLB-web-LB",
      `iptables-nft -t nat -A NFLB-web-LB -m statistic --mode nth --every 3 --packet 0 ${dnat(1)}`,
      `iptables-nft -t nat -A NFLB-web-LB -m statistic --mode nth --every 2 --packet 0 ${dnat(2)}`,
      `iptables-nft -t nat -A NFLB-web-LB ${dnat(3)}`,
      "iptables-nft -t nat -A PREROUTING -j NFLB-web",
      "iptables-nft -t nat -A OUTPUT -j NFLB-web",
    ]);
    assert.deepEqual(r.ipRules, []);
    assert.doesNotMatch(r.nft, /NFQUEUE|dnat|set marks/);
    assert.match(r.nft, /type ipv4_addr : counter;/);
  });

  test("weighted nth: one rule per slot of the reduced weights", () => {
    const r = renderSetup(
      spec({
        mode: "statistic",
        targets: [
          { fwmark: 1, address: "192.168.1.1", weight: 2 },
          { fwmark: 2, address: "192.168.1.2", weight: 4 },
          { fwmark: 3, address: "192.168.1.3", weight: 0 },
        ],
      }),
    );
    const lb = args(r.iptables).filter((c) => c.includes("-A NFLB-web-LB"));
    assert.deepEqual(
      lb.map((c) => /--every (\d+)/.exec(c)?.[1] ?? "-"),
      ["3", "2", "-"],
    );
    assert.deepEqual(
      lb.map((c) => /fwmark=(\d+)/.exec(c)?.[1]),
      ["2", "1", "2"],
    );
  });

  test("random: probability w_k over the remaining weight, last unconditional", () => {
    const r = renderSetup(
      spec({
        mode: "statistic",
        statistic: "random",
        snat: true,
        ...V6,
        targets: [...V6.targets, { fwmark: 30, address: "fd00:100::3", weight: 2 }],
      }),
    );
    const lb = args(r.iptables).filter((c) => c.includes("-A NFLB-web-LB"));
    assert.deepEqual(lb, [
      "ip6tables-nft -t nat -A NFLB-web-LB -m statistic --mode random --probability 0.16666666667 -m comment --comment nflb:web:fwmark=10 -j DNAT --to-destination fd00:100::1",
      "ip6tables-nft -t nat -A NFLB-web-LB -m statistic --mode random --probability 0.60000000000 -m comment --comment nflb:web:fwmark=20 -j DNAT --to-destination fd00:100::2",
      "ip6tables-nft -t nat -A NFLB-web-LB -m comment --comment nflb:web:fwmark=30 -j DNAT --to-destination fd00:100::3",
    ]);
    assert.match(
      r.nft,
      /ct status dnat ct original ip6 daddr @vips ip6 daddr @targets counter masquerade/,
    );
  });
});

describe("helpers", () => {
  test("ports: parsing, and multiport's 15 slots per rule", () => {
    assert.deepEqual(parsePorts("80, 443,8000-8100"), [
      { lo: 80, hi: 80 },
      { lo: 443, hi: 443 },
      { lo: 8000, hi: 8100 },
    ]);
    assert.deepEqual(parsePorts(""), []);
    const many = parsePorts(
      `${Array.from({ length: 14 }, (_, i) => String(1000 + i)).join(",")},2000-2010`,
    );
    assert.deepEqual(portChunks(many), [
      `${Array.from({ length: 14 }, (_, i) => String(1000 + i)).join(",")}`,
      "2000:2010",
    ]);
  });

  test("ports without protocols mean tcp, udp and sctp (and ICMP echo)", () => {
    const r = renderSetup(spec({ ports: "443" }));
    assert.deepEqual(
      r.iptables.filter((c) => c.includes("NFQUEUE")).map((c) => c[c.indexOf("-p") + 1]),
      ["tcp", "udp", "sctp", "icmp"],
    );
  });

  test("nthSlots: smooth weighted order", () => {
    assert.deepEqual(nthSlots([1, 1, 1]), [0, 1, 2]);
    assert.deepEqual(nthSlots([5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    assert.deepEqual(nthSlots([0, 3]), [1]);
  });

  test("render is pure and deterministic", () => {
    assert.deepEqual(renderSetup(spec({ mode: "dsr" })), renderSetup(spec({ mode: "dsr" })));
  });
});

describe("validateSpec", () => {
  const rejects = (over: Partial<SetupSpec>, re: RegExp) => {
    assert.throws(
      () => validateSpec(spec(over)),
      (err: unknown) => err instanceof SetupError && re.test(err.message),
      `expected ${re} for ${JSON.stringify(over)}`,
    );
  };

  test("accepts good specs", () => {
    validateSpec(spec());
    validateSpec(spec({ ...V6, mode: "dsr", ports: "1-65535", protocols: ["sctp"] }));
    validateSpec(spec({ mode: "statistic", statistic: "random", snat: true }));
  });

  test("bad VIPs", () => {
    rejects({ vips: ["10.0.0.1/33"] }, /invalid prefix length/);
    rejects({ vips: ["10.0.0.1/24"] }, /host bits set \(did you mean 10\.0\.0\.0\/24\?\)/);
    rejects({ vips: ["10.0.0"] }, /not an IPv4\/IPv6 address or CIDR/);
    rejects({ vips: ["example.com"] }, /not an IPv4\/IPv6 address/);
    rejects({ vips: ["fe80::1%eth0"] }, /not an IPv4\/IPv6 address/);
    rejects({ vips: ["0.0.0.0/0"] }, /capture all traffic/);
    rejects({ vips: [] }, /at least one VIP/);
    rejects({ vips: ["10.0.0.0/24", "10.0.0.7"] }, /overlap/);
    rejects({ vips: ["::ffff:10.0.0.1"] }, /IPv4-mapped/);
  });

  test("bad ports and protocols", () => {
    rejects({ ports: "0" }, /ports: port 0 is not a service port/);
    rejects({ ports: "70000" }, /ports: port 70000 is above 65535/);
    rejects({ ports: "90-80" }, /ports: bad range "90-80"/);
    rejects({ ports: "80,,81" }, /ports: empty item in "80,,81"/);
    rejects({ ports: "http" }, /ports: bad port or range "http"/);
    rejects({ protocols: ["icmp" as "tcp"] }, /protocol "icmp"/);
    rejects({ protocols: ["tcp", "tcp"] }, /listed twice/);
  });

  test("bad targets", () => {
    const t = (over: object) => [{ fwmark: 1, address: "192.168.1.1", weight: 1, ...over }];
    rejects(
      {
        targets: [
          { fwmark: 1, address: "192.168.1.1", weight: 1 },
          { fwmark: 1, address: "192.168.1.2", weight: 1 },
        ],
      },
      /fwmark 1 is used by more than one target/,
    );
    rejects({ targets: t({ fwmark: 0 }) }, /fwmark must be an integer 1\.\.4294967295/);
    rejects({ targets: t({ fwmark: 2 ** 32 }) }, /fwmark must be/);
    rejects({ targets: t({ fwmark: 1.5 }) }, /fwmark must be/);
    rejects(
      { targets: t({ address: "fd00::1" }) },
      /address family differs from the VIPs' \(IPv4\)/,
    );
    rejects({ targets: t({ address: "192.168.1.0/24" }) }, /no prefix length/);
    rejects({ targets: t({ address: "127.0.0.1" }) }, /unicast address, not loopback/);
    rejects({ targets: t({ address: "10.0.0.1" }) }, /inside VIP 10\.0\.0\.1\/32/);
    rejects({ targets: t({ weight: -1 }) }, /weight must be an integer/);
    rejects({ targets: t({ weight: 0 }) }, /every target has weight 0/);
    rejects({ targets: [] }, /at least one target/);
    rejects(
      {
        targets: [
          { fwmark: 1, address: "192.168.1.1", weight: 1 },
          { fwmark: 2, address: "192.168.001.1", weight: 1 },
        ],
      },
      /not an IPv4\/IPv6 address/,
    );
    rejects({ mode: "dsr", targets: t({ fwmark: 254 }) }, /253-255 are the kernel's/);
  });

  test("mixed families", () => {
    rejects({ vips: ["10.0.0.1", "fd00::1"] }, /VIPs mix IPv4 and IPv6/);
    rejects({ ...V6, targets: [{ fwmark: 1, address: "192.168.1.1", weight: 1 }] }, /IPv6/);
  });

  test("option combinations", () => {
    rejects({ mode: "dsr", synOnly: true }, /--syn-only needs --mode nat/);
    rejects({ mode: "statistic", synOnly: true }, /--syn-only applies to --mode nat/);
    rejects({ mode: "dsr", snat: true }, /--snat needs --mode nat or statistic/);
    rejects({ mode: "lvs" as "nat" }, /mode "lvs"/);
    rejects({ statistic: "rr" as "nth" }, /statistic "rr"/);
    rejects({ queue: { first: 3, last: 2 } }, /queue 3:2/);
    rejects({ queue: { first: 0, last: 65536 } }, /queue 0:65536/);
    rejects({ rulePriority: 0 }, /rule priority 0/);
    rejects({ name: "bad name" }, /name "bad name"/);
    rejects({ name: "a".repeat(21) }, /1-20 characters/);
    rejects(
      {
        mode: "statistic",
        targets: [
          { fwmark: 1, address: "192.168.1.1", weight: 1000 },
          { fwmark: 2, address: "192.168.1.2", weight: 999 },
        ],
      },
      /needs 1999 rules/,
    );
  });

  test("all problems in one message", () => {
    assert.throws(
      () => validateSpec(spec({ vips: ["10.0.0.1/40"], ports: "x", name: "" })),
      /name "".*; VIP .*; ports: bad port/,
    );
  });
});
