// renderSetup / validateSpec for dsr --fragments: the -450 notrack/mark chain, the
// fragment queue rule ahead of the normal ones, the TUN device commands, the rejections.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  buildPlan,
  FRAGMENT_MARK,
  normalizeSpec,
  renderSetup,
  SetupError,
  type SetupSpec,
  validateSpec,
  validTunName,
} from "../../src/netfilter/index.js";

function spec(over: Partial<SetupSpec> = {}): SetupSpec {
  return {
    name: "web",
    mode: "dsr",
    vips: ["10.0.0.1", "10.0.1.0/24"],
    targets: [
      { fwmark: 1, address: "192.168.1.1", weight: 1 },
      { fwmark: 2, address: "192.168.1.2", weight: 1 },
    ],
    queue: { first: 0, last: 3 },
    queueBypass: false,
    synOnly: false,
    protocols: [],
    ports: "",
    statistic: "nth",
    snat: false,
    fragments: { queue: 4, tun: "nflb-web" },
    ...over,
  };
}

const V6 = {
  vips: ["fd00::1"],
  targets: [{ fwmark: 10, address: "fd00:100::1", weight: 1 }],
};

function nftChain(script: string, name: string): string[] {
  const m = new RegExp(`\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(script);
  assert.ok(m, `chain ${name} missing`);
  return m[1].split("\n").map((l) => l.trim());
}

const args = (cmds: string[][]) => cmds.map((c) => c.join(" "));

describe("renderSetup dsr --fragments", () => {
  test("the reserved mark is 'nflb' in ASCII", () => {
    assert.equal(FRAGMENT_MARK, 0x6e666c62);
    assert.equal(Buffer.from(FRAGMENT_MARK.toString(16), "hex").toString(), "nflb");
  });

  test("IPv4: notrack + mark at -450, fragment queue rules first, TUN commands", () => {
    const r = renderSetup(spec({ queueBypass: true }));
    assert.deepEqual(nftChain(r.nft, "fragments_prerouting"), [
      "type filter hook prerouting priority -450; policy accept;",
      "ip daddr @vips notrack",
      "ip daddr @vips ip frag-off & 0x3fff != 0 meta mark set 0x6e666c62",
    ]);
    const frag = (vip: string) =>
      `iptables-nft -t mangle -A NFLB-web -d ${vip} -m mark --mark 0x6e666c62 -m comment --comment nflb:web:fragments -j NFQUEUE --queue-num 4 --queue-bypass`;
    const queue = (vip: string) =>
      `iptables-nft -t mangle -A NFLB-web -d ${vip} -m comment --comment nflb:web:queue -j NFQUEUE --queue-balance 0:3 --queue-bypass`;
    assert.deepEqual(args(r.iptables), [
      "iptables-nft -t mangle -N NFLB-web",
      frag("10.0.0.1/32"),
      frag("10.0.1.0/24"),
      queue("10.0.0.1/32"),
      queue("10.0.1.0/24"),
      "iptables-nft -t mangle -A PREROUTING -j NFLB-web",
      "iptables-nft -t mangle -A OUTPUT -j NFLB-web",
    ]);
    assert.match(
      r.iptablesRestore,
      /^:NFLB-web - \[0:0\]\n-A NFLB-web -d 10\.0\.0\.1\/32 -m mark --mark 0x6e666c62 -m comment --comment nflb:web:fragments -j NFQUEUE --queue-num 4 --queue-bypass\n/m,
    );
    assert.deepEqual(args(r.ipRules), [
      "ip tuntap add dev nflb-web mode tun",
      "ip link set dev nflb-web alias nflb:web:fragments addrgenmode none up",
      "sysctl -qw net.ipv4.conf.nflb-web.rp_filter=0",
      "ip -4 route add default via 192.168.1.1 table 1",
      "ip -4 route add default via 192.168.1.2 table 2",
      "ip -4 rule add pref 1000 fwmark 1 table 1",
      "ip -4 rule add pref 1000 fwmark 2 table 2",
    ]);
    // The existing dsr chains are unchanged.
    assert.deepEqual(nftChain(r.nft, "count_prerouting"), [
      "type filter hook prerouting priority mangle + 10; policy accept;",
      "ip daddr @vips meta mark @marks counter name meta mark map @pkts_counters",
    ]);
  });

  test("IPv6: exthdr frag, ip6tables-nft, no rp_filter", () => {
    const r = renderSetup(
      spec({ ...V6, queue: { first: 5, last: 5 }, fragments: { queue: 0, tun: "t.6" } }),
    );
    assert.deepEqual(nftChain(r.nft, "fragments_prerouting"), [
      "type filter hook prerouting priority -450; policy accept;",
      "ip6 daddr @vips notrack",
      "ip6 daddr @vips exthdr frag exists meta mark set 0x6e666c62",
    ]);
    assert.deepEqual(args(r.iptables).slice(1, 3), [
      "ip6tables-nft -t mangle -A NFLB-web -d fd00::1/128 -m mark --mark 0x6e666c62 -m comment --comment nflb:web:fragments -j NFQUEUE --queue-num 0",
      "ip6tables-nft -t mangle -A NFLB-web -d fd00::1/128 -m comment --comment nflb:web:queue -j NFQUEUE --queue-num 5",
    ]);
    assert.deepEqual(args(r.ipRules).slice(0, 3), [
      "ip tuntap add dev t.6 mode tun",
      "ip link set dev t.6 alias nflb:web:fragments addrgenmode none up",
      "ip -6 route add default via fd00:100::1 table 10",
    ]);
  });

  test("protocols (and ICMP, whose echo is queued) limit the marked fragments; ports cannot (later fragments have none)", () => {
    const one = renderSetup(spec({ protocols: ["udp"], ports: "53" }));
    assert.equal(
      nftChain(one.nft, "fragments_prerouting")[2],
      "ip daddr @vips ip frag-off & 0x3fff != 0 meta l4proto { udp, icmp } meta mark set 0x6e666c62",
    );
    assert.match(
      args(one.iptables)[1],
      /^iptables-nft -t mangle -A NFLB-web -d 10\.0\.0\.1\/32 -m mark/,
    );
    const two = renderSetup(spec({ ...V6, protocols: ["tcp", "sctp"] }));
    assert.equal(
      nftChain(two.nft, "fragments_prerouting")[2],
      "ip6 daddr @vips exthdr frag exists meta l4proto { tcp, sctp, ipv6-icmp } meta mark set 0x6e666c62",
    );
  });

  test("sysctl key with slashes for a name with a dot", () => {
    const r = renderSetup(spec({ fragments: { queue: 9, tun: "frag.0" } }));
    assert.equal(args(r.ipRules)[2], "sysctl -qw net/ipv4/conf/frag.0/rp_filter=0");
  });

  test("the plan records the TUN device; without --fragments nothing changes", () => {
    const plan = buildPlan(normalizeSpec(spec()));
    assert.deepEqual(plan.tun, { name: "nflb-web", alias: "nflb:web:fragments" });
    assert.equal(plan.nftChains.fragments_prerouting, 2);
    const { fragments: _, ...plain } = spec();
    const without = buildPlan(normalizeSpec(plain));
    assert.equal("tun" in without, false, "no tun key (records compare deeply)");
    assert.doesNotMatch(without.nft, /fragments_prerouting|notrack|0x6e666c62/);
    assert.equal("fragments" in normalizeSpec(plain), false);
    const r = renderSetup(plain);
    assert.doesNotMatch(r.iptablesRestore, /--mark/);
    assert.ok(r.ipRules.every((c) => c[1] !== "tuntap"));
  });
});

describe("validateSpec --fragments", () => {
  const rejects = (over: Partial<SetupSpec>, re: RegExp) => {
    assert.throws(
      () => validateSpec(spec(over)),
      (err: unknown) => err instanceof SetupError && re.test(err.message),
      `expected ${re} for ${JSON.stringify(over)}`,
    );
  };

  test("accepts good specs", () => {
    validateSpec(spec());
    validateSpec(spec({ fragments: { queue: 65535, tun: "a" } }));
    validateSpec(
      spec({ fragments: { queue: 0, tun: "x".repeat(15) }, queue: { first: 1, last: 1 } }),
    );
    validateSpec(spec({ ...V6, fragments: { queue: 7, tun: "nflb_frag-6.x" } }));
  });

  test("dsr only, with the reason", () => {
    rejects(
      { mode: "nat" },
      /--fragments needs --mode dsr: nat needs conntrack, and conntrack reassembles fragments/,
    );
    rejects({ mode: "statistic" }, /--fragments needs --mode dsr: statistic mode has no daemon/);
  });

  test("the fragment queue is a queue of its own", () => {
    for (const q of [0, 2, 3]) {
      rejects(
        { fragments: { queue: q, tun: "t" } },
        new RegExp(`fragment queue ${q} lies in the normal queue range 0:3`),
      );
    }
    rejects({ fragments: { queue: 65536, tun: "t" } }, /fragment queue 65536 must be 0\.\.65535/);
    rejects({ fragments: { queue: -1, tun: "t" } }, /fragment queue -1 must be/);
    rejects({ fragments: { queue: 1.5, tun: "t" } }, /fragment queue 1\.5 must be/);
    rejects({ fragments: { queue: "5" as unknown as number, tun: "t" } }, /fragment queue 5 must/);
  });

  test("TUN names the kernel (and TUNSETIFF) take as they are", () => {
    for (const bad of [
      "",
      "x".repeat(16),
      "a/b",
      "a b",
      "a\tb",
      "a:b",
      "tun%d",
      ".",
      "..",
      "tün",
    ]) {
      assert.equal(validTunName(bad), false, bad);
      rejects({ fragments: { queue: 9, tun: bad } }, /TUN name .* must be 1-15 printable ASCII/);
    }
    for (const good of ["t", "nflb-web", "a.b", "...", "x".repeat(15), "-"]) {
      assert.equal(validTunName(good), true, good);
    }
    rejects({ fragments: { queue: 9, tun: 5 as unknown as string } }, /TUN name 5 must be/);
  });

  test("the reserved mark is no target fwmark; fragments must be an object", () => {
    rejects(
      { targets: [{ fwmark: FRAGMENT_MARK, address: "192.168.1.1", weight: 1 }] },
      /fwmark 1852206178 \(0x6e666c62\) is reserved for fragments/,
    );
    // Without --fragments the mark is an ordinary one.
    const { fragments: _, ...plain } = spec({
      targets: [{ fwmark: FRAGMENT_MARK, address: "192.168.1.1", weight: 1 }],
    });
    validateSpec(plain);
    rejects(
      { fragments: null as unknown as SetupSpec["fragments"] },
      /fragments must be \{ queue, tun \}/,
    );
  });

  test("all problems in one message", () => {
    assert.throws(
      () => validateSpec(spec({ mode: "nat", fragments: { queue: 1, tun: "a/b" } })),
      /--fragments needs --mode dsr.*; fragment queue 1 lies in .*; TUN name "a\/b"/,
    );
  });
});
