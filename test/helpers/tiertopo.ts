// A load-balancer tier behind an ECMP router, for DSR with fragments. Everything lives in
// namespaces made here; nothing touches the root one.
//
//   client ──── router ──── br0 (in "sw") ──── lb1, lb2, t1, t2, t3
//
//   front  10.72.1.0/24: client .10 .11 .12 .13, router .1.
//   back   10.72.0.0/24 on a bridge in a switch namespace: router .1, lb1 .2, lb2 .3,
//          targets .21 .22 .23.
//   VIP    10.72.9.1 on the targets' lo (DSR). The router routes it over both load
//          balancers (`nexthop via lb1 nexthop via lb2`, L4 multipath hash: flows spread,
//          fragments, which the kernel hashes on addresses only, stay together), and the
//          targets answer the client directly through the router.
//   steering  crafted packets (sources in CRAFTED_NET, injected into the router through a
//          TUN device) choose their load balancer by their TTL: STEER_TTL[i] makes the
//          router mark them and route them to lb(i+1) alone, so a datagram's fragments can
//          be split between the instances on purpose.
// No host has a route the load balancers could bounce an unmarked VIP packet back on, and
// nobody sends or accepts ICMP redirects (the lbs forward out of the interface they
// received on).
import { link, type Netns, Topology } from "./netns.js";

export const VIP = "10.72.9.1";
export const CLIENTS = ["10.72.1.10", "10.72.1.11", "10.72.1.12", "10.72.1.13"];
export const ROUTER = "10.72.0.1";
export const LB_ADDRS = ["10.72.0.2", "10.72.0.3"];
export const TARGET_ADDRS = ["10.72.0.21", "10.72.0.22", "10.72.0.23"];
/** Sources of crafted packets: routed into the router's TUN device by injectViaTun. */
export const CRAFTED_NET = "10.72.3.0/24";
/** The TTL that sends a crafted packet to lb1, lb2 (index 0, 1). */
export const STEER_TTL = [201, 202];

export interface TierTopology {
  topo: Topology;
  client: Netns;
  router: Netns;
  lbs: Netns[];
  targets: Netns[];
}

export function tierTopology(): TierTopology {
  const topo = new Topology();
  try {
    const sw = topo.add("sw");
    const client = topo.add("cl");
    const router = topo.add("rt");
    const lbs = [1, 2].map((i) => topo.add(`lb${i}`));
    const targets = [1, 2, 3].map((i) => topo.add(`t${i}`));
    for (const ns of [sw, client, router, ...lbs, ...targets]) {
      ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
      ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
      for (const key of ["all", "default"]) {
        ns.sysctl(`net.ipv4.conf.${key}.send_redirects`, "0");
        ns.sysctl(`net.ipv4.conf.${key}.accept_redirects`, "0");
        ns.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
      }
    }

    link(client, "eth0", [`${CLIENTS[0]}/24`], router, "front", ["10.72.1.1/24"]);
    for (const a of CLIENTS.slice(1)) client.exec("ip", ["addr", "add", `${a}/24`, "dev", "eth0"]);
    client.exec("ip", ["route", "add", "default", "via", "10.72.1.1"]);

    sw.exec("ip", ["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    sw.exec("ip", ["link", "set", "br0", "up"]);
    const port = (peer: Netns, p: string, ifname: string, addrs: string[]) => {
      link(sw, p, [], peer, ifname, addrs);
      sw.exec("ip", ["link", "set", p, "master", "br0"]);
      // Devices made after the "default" sysctls got them; set them anyway, explicitly.
      peer.sysctl(`net.ipv4.conf.${ifname}.send_redirects`, "0");
      peer.sysctl(`net.ipv4.conf.${ifname}.rp_filter`, "0");
    };
    port(router, "p-rt", "back", [`${ROUTER}/24`]);
    for (const [i, lb] of lbs.entries()) {
      port(lb, `p-lb${i + 1}`, "eth0", [`${LB_ADDRS[i]}/24`]);
      lb.sysctl("net.ipv4.ip_forward", "1");
    }
    for (const [i, t] of targets.entries()) {
      port(t, `p-t${i + 1}`, "eth0", [`${TARGET_ADDRS[i]}/24`]);
      t.exec("ip", ["addr", "add", `${VIP}/32`, "dev", "lo"]);
      // Replies go straight to the router, never back through a load balancer.
      t.exec("ip", ["route", "add", "default", "via", ROUTER]);
      for (const key of ["all", "default", "eth0", "lo"]) {
        t.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
        t.sysctl(`net.ipv4.conf.${key}.arp_ignore`, "1");
        t.sysctl(`net.ipv4.conf.${key}.arp_announce`, "2");
      }
    }

    router.sysctl("net.ipv4.ip_forward", "1");
    router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
    router.exec("ip", [
      "route",
      "add",
      `${VIP}/32`,
      ...LB_ADDRS.flatMap((a) => ["nexthop", "via", a]),
    ]);
    // Steering of crafted packets: TTL -> mark -> a table with one load balancer.
    router.exec(
      "nft",
      ["-f", "-"],
      `table ip tier_steer {
  chain pre {
    type filter hook prerouting priority mangle; policy accept;
${STEER_TTL.map((ttl) => `    ip daddr ${VIP} ip ttl ${ttl} meta mark set ${ttl}`).join("\n")}
  }
}
`,
    );
    for (const [i, ttl] of STEER_TTL.entries()) {
      router.exec("ip", ["route", "add", `${VIP}/32`, "via", LB_ADDRS[i], "table", String(ttl)]);
      router.exec("ip", [
        "rule",
        "add",
        "pref",
        "100",
        "fwmark",
        String(ttl),
        "table",
        String(ttl),
      ]);
    }
    return { topo, client, router, lbs, targets };
  } catch (err) {
    topo.destroy();
    throw err;
  }
}
