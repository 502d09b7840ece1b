// nat and dsr rule sets end to end, with a stand-in for the daemon: the NFQUEUE rule is
// bypassed (--queue-bypass, nobody listens) and a temporary nft rule right after it sets
// the mark the daemon would set. This proves DNAT-by-mark, CONNMARK save/restore and
// routing-by-mark without the daemon.
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import type { SetupCounters, SetupSpec } from "../../src/netfilter/index.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import {
  type LbTopology,
  lbTopology,
  makeDsrTargets,
  netfilter,
  netfilterCall,
  startTargetServer,
  type TargetServer,
  tally,
  tcpRequests,
  udpRequests,
} from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP4 = "10.200.0.1";
const VIP6 = "fd00:200::1";

function spec(over: Partial<SetupSpec>): SetupSpec {
  return {
    name: "lb",
    mode: "nat",
    vips: [VIP4],
    targets: [],
    queue: { first: 7, last: 7 },
    queueBypass: true,
    synOnly: false,
    protocols: ["tcp", "udp"],
    ports: "",
    statistic: "nth",
    snat: false,
    ...over,
  };
}

/**
 * The daemon's stand-in, at mangle + 5: after the queue rule (mangle), before nflb's own
 * chains (mangle + 10). `mark` is an nft expression giving 1..3. Also named counters: for
 * nat the established packets (all, and those with a mark), for both what the lb
 * forwarded to and from the VIP.
 */
function standIn(
  lb: Netns,
  vip: string,
  mark: string,
  nat: boolean,
  l4protos = "{ tcp, udp }",
): void {
  const ip = vip.includes(":") ? "ip6" : "ip";
  const rule = `${ip} daddr ${vip} ${nat ? "ct state new " : ""}meta l4proto ${l4protos} meta mark set ${mark}`;
  // Conntrack only in the nat case: in dsr the lb sees one direction of each flow.
  const check = nat
    ? `chain check { type filter hook prerouting priority mangle + 20; policy accept;
    ct direction original ct state established ${ip} daddr ${vip} counter comment "established";
    ct direction original ct state established ${ip} daddr ${vip} meta mark != 0 counter comment "marked";
  }`
    : "";
  lb.exec(
    "nft",
    ["-f", "-"],
    `table inet standin {
  chain pre { type filter hook prerouting priority mangle + 5; policy accept; ${rule}; }
  chain out { type route hook output priority mangle + 5; policy accept; ${rule}; }
  ${check}
  chain forward_watch { type filter hook forward priority 0; policy accept;
    ${ip} daddr ${vip} counter comment "to_vip";
    ${ip} saddr ${vip} counter comment "from_vip";
  }
}
`,
  );
}

/** The stand-in's named counters (packets). */
function standInCounters(lb: Netns): Record<string, number> {
  const out = lb.exec("nft", ["list", "table", "inet", "standin"]);
  const counters: Record<string, number> = {};
  for (const m of out.matchAll(/counter packets (\d+) bytes \d+ comment "(\w+)"/g)) {
    counters[m[2]] = Number(m[1]);
  }
  return counters;
}

describe("setup nat/dsr with a stand-in for the daemon", { skip }, () => {
  let t: LbTopology;
  const servers: TargetServer[] = [];

  before(async () => {
    t = lbTopology();
    // VIPs on the targets' lo (dsr); harmless for nat, where they see their own address.
    makeDsrTargets(t, [`${VIP4}/32`, `${VIP6}/128`]);
    for (const [i, ns] of t.targets.entries()) {
      const a = t.targetAddrs[i];
      servers.push(await startTargetServer(ns, `t${i + 1}`, PORT, [a.v4, a.v6, VIP4, VIP6]));
    }
  });
  afterEach(() => {
    netfilterCall(t.lb, "teardown", "lb");
    t.lb.tryExec("nft", ["delete", "table", "inet", "standin"]);
  });
  after(() => {
    for (const s of servers) s.stop();
    t?.topo.destroy();
  });

  const targets = (family: "v4" | "v6") =>
    t.targetAddrs.map((a, i) => ({ fwmark: i + 1, address: a[family], weight: 1 }));

  test("nat --syn-only: DNAT by mark, mark kept in conntrack and restored", async () => {
    netfilter(t.lb, "setup", spec({ targets: targets("v4"), synOnly: true }));
    standIn(t.lb, VIP4, "numgen inc mod 3 offset 1", true);

    const tcp = await tcpRequests(t.client, {
      host: VIP4,
      port: PORT,
      count: 30,
      firstPort: 40000,
    });
    assert.deepEqual(tally(tcp), { t1: 10, t2: 10, t3: 10 });
    const udp = await udpRequests(t.client, {
      host: VIP4,
      port: PORT,
      count: 15,
      firstPort: 40100,
    });
    assert.deepEqual(tally(udp), { t1: 5, t2: 5, t3: 5 });

    // CONNMARK save: every flow to the VIP carries its target's mark in conntrack.
    const ct = t.lb.exec("conntrack", ["-L", "-d", VIP4]);
    const marks = [...ct.matchAll(/ mark=(\d+)/g)].map((m) => Number(m[1]));
    assert.equal(marks.length, 45, ct);
    assert.deepEqual(tally(marks.map(String)), { 1: 15, 2: 15, 3: 15 });
    // CONNMARK restore: every later packet (not queued with --syn-only) has its mark.
    const { established, marked } = standInCounters(t.lb);
    assert.ok(established > 0);
    assert.equal(marked, established);

    const c = netfilter<SetupCounters>(t.lb, "readCounters", "lb");
    assert.deepEqual(
      c.targets.map((x) => x.connections),
      [15, 15, 15],
    );
    // --syn-only: only the first packet of each flow met the queue rule.
    assert.ok(c.queued.packets >= 45 && c.queued.packets < 50, JSON.stringify(c.queued));
    for (const x of c.targets) assert.ok(x.packets > (x.connections ?? 0), JSON.stringify(x));

    // Locally originated connections: OUTPUT path.
    const local = await tcpRequests(t.lb, { host: VIP4, port: PORT, count: 6, firstPort: 40200 });
    assert.deepEqual(tally(local), { t1: 2, t2: 2, t3: 2 });
  });

  test("nat IPv6 without --syn-only", async () => {
    netfilter(t.lb, "setup", spec({ vips: [`${VIP6}/128`], targets: targets("v6") }));
    standIn(t.lb, VIP6, "numgen inc mod 3 offset 1", true);
    const tcp = await tcpRequests(t.client, { host: VIP6, port: PORT, count: 9, firstPort: 41000 });
    assert.deepEqual(tally(tcp), { t1: 3, t2: 3, t3: 3 });
    const udp = await udpRequests(t.client, { host: VIP6, port: PORT, count: 3, firstPort: 41100 });
    assert.deepEqual(tally(udp), { t1: 1, t2: 1, t3: 1 });
    const c = netfilter<SetupCounters>(t.lb, "readCounters", "lb");
    // Without --syn-only every packet to the VIP meets the queue rule.
    const sent = c.targets.reduce((s, x) => s + x.packets, 0);
    assert.ok(c.queued.packets >= sent && sent > 12, JSON.stringify(c));
  });

  for (const mode of ["nat", "dsr"] as const) {
    test(`${mode} --proto tcp --ports: ping to the VIP is queued by the ICMP rule, marked, answered`, () => {
      netfilter(
        t.lb,
        "setup",
        spec({ mode, targets: targets("v4"), protocols: ["tcp"], ports: String(PORT) }),
      );
      standIn(t.lb, VIP4, "numgen inc mod 3 offset 1", mode === "nat", "{ tcp, icmp }");
      const r = t.client.tryExec("ping", [
        "-4",
        "-n",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-w",
        "5",
        // dsr: the back address, on-link for the targets, which answer it directly.
        ...(mode === "dsr" ? ["-I", "10.100.0.10"] : []),
        VIP4,
      ]);
      assert.equal(r.status, 0, `ping: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /3 packets transmitted, 3 received/);
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "lb");
      // The echo requests met the ICMP rule (and nothing else was queued); what the
      // stand-in marked reached the targets.
      assert.deepEqual(c.icmp, c.queued, JSON.stringify(c));
      assert.equal(c.icmp?.packets, 3, JSON.stringify(c));
      assert.equal(
        c.targets.reduce((n, x) => n + x.packets, 0),
        3,
      );
      if (mode === "nat") {
        assert.equal(
          c.targets.reduce((n, x) => n + (x.connections ?? 0), 0),
          1,
          "one ping, one conntrack entry",
        );
      }
    });
  }

  for (const family of ["v4", "v6"] as const) {
    test(`dsr ${family}: routed by mark, replies go directly target -> client`, async () => {
      const vip = family === "v4" ? VIP4 : VIP6;
      netfilter(t.lb, "setup", spec({ mode: "dsr", vips: [vip], targets: targets(family) }));
      // Per flow (not per packet) like the daemon: a hash of the source address and port.
      const ip = family === "v4" ? "ip" : "ip6";
      standIn(t.lb, vip, `jhash ${ip} saddr . th sport mod 3 seed 0x5 offset 1`, false);
      // The client's back address is on the targets' network: they answer it directly.
      const localAddress = family === "v4" ? "10.100.0.10" : "fd00:100::10";
      const count = family === "v4" ? 30 : 9;
      const opts = { host: vip, port: PORT, count, localAddress };
      const tcp = await tcpRequests(t.client, { ...opts, firstPort: 42000 });
      const udp = await udpRequests(t.client, { ...opts, firstPort: 42100 });
      const got = tally([...tcp, ...udp]);
      assert.equal(
        Object.keys(got).filter((k) => k.startsWith("ERR")).length,
        0,
        JSON.stringify(got),
      );
      if (family === "v4") assert.deepEqual(Object.keys(got).sort(), ["t1", "t2", "t3"]);

      const { to_vip: toVip, from_vip: fromVip } = standInCounters(t.lb);
      assert.ok(toVip >= 4 * count, `forwarded to the VIP: ${toVip}`);
      assert.equal(fromVip, 0, "a reply went through the lb");
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "lb");
      assert.equal(
        c.targets.reduce((s, x) => s + x.packets, 0),
        toVip,
      );
      assert.ok(c.targets.every((x) => x.connections === undefined));
      assert.equal(c.queued.packets, toVip);
    });
  }
});
