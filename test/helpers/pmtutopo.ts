// A DSR test bed with a router and a narrow link, for path MTU discovery through the
// load balancer. Everything lives in namespaces made here; nothing touches the root one.
//
//   client ──(1500 | 1280)── router ══ br0 (in the router) ══ lb, t1, t2, t3
//
//   front  10.61.1.0/24, fd00:611::/64: client .10 .11 .12 .13, router .1. The veth end
//          in the client has MTU 1500, so its SYNs advertise a full-size MSS (1460 /
//          1440); the router's end has 1280, and its IPv4 route to the client a route
//          MTU of 1000: the router is the only one that knows the path is narrow.
//   back   10.61.0.0/24, fd00:610::/64 on a bridge inside the router: router .1, lb .2,
//          targets .21 .22 .23; every link here has MTU 1500.
//   VIPs   10.61.9.1, fd00:619::1, on the targets' lo (DSR). The router routes the VIPs
//          to the lb; the lb forwards by the daemon's mark; the targets answer the client
//          directly through the router. A reply too large for the narrow link makes the
//          router send fragmentation-needed / packet-too-big to the VIP, i.e. to the lb.
import { link, type Netns, Topology } from "./netns.js";

export const PMTU_V4 = 1000;
export const PMTU_V6 = 1280;

export const VIP4 = "10.61.9.1";
export const VIP6 = "fd00:619::1";
/** The client's addresses: index 0 is the default source, the others for other experiments. */
export const CLIENT4 = ["10.61.1.10", "10.61.1.11", "10.61.1.12", "10.61.1.13"];
export const CLIENT6 = ["fd00:611::10", "fd00:611::11", "fd00:611::12", "fd00:611::13"];
export const ROUTER4 = "10.61.0.1";
export const ROUTER6 = "fd00:610::1";

export interface PmtuTopology {
  topo: Topology;
  client: Netns;
  router: Netns;
  lb: Netns;
  targets: Netns[];
  targetAddrs: { v4: string; v6: string }[];
}

export function pmtuTopology(): PmtuTopology {
  const topo = new Topology();
  try {
    const client = topo.add("cl");
    const router = topo.add("rt");
    const lb = topo.add("lb");
    const targets = [1, 2, 3].map((i) => topo.add(`t${i}`));
    for (const ns of [client, router, lb, ...targets]) {
      // No duplicate address detection: addresses and link-locals usable at once.
      ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
      ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
      // No redirects anywhere: the lb forwards out of the interface it received on, and
      // a redirect would teach the router to bypass it.
      for (const key of ["all", "default"]) {
        ns.sysctl(`net.ipv4.conf.${key}.send_redirects`, "0");
        ns.sysctl(`net.ipv4.conf.${key}.accept_redirects`, "0");
        ns.sysctl(`net.ipv6.conf.${key}.accept_redirects`, "0");
        ns.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
      }
    }

    // Front: full MTU on the client's side, narrow on the router's.
    link(client, "eth0", [`${CLIENT4[0]}/24`, `${CLIENT6[0]}/64`], router, "r-cl", [
      "10.61.1.1/24",
      "fd00:611::1/64",
    ]);
    for (const a of CLIENT4.slice(1)) client.exec("ip", ["addr", "add", `${a}/24`, "dev", "eth0"]);
    for (const a of CLIENT6.slice(1)) {
      client.exec("ip", ["addr", "add", `${a}/64`, "dev", "eth0", "nodad"]);
    }
    router.exec("ip", ["link", "set", "r-cl", "mtu", String(PMTU_V6)]);
    // IPv4 gets its own, smaller bottleneck (a route MTU, which forwarding honours), so
    // the two families' path MTUs are told apart in the targets' route caches.
    router.exec("ip", ["route", "add", "10.61.1.0/25", "dev", "r-cl", "mtu", String(PMTU_V4)]);
    client.exec("ip", ["route", "add", "default", "via", "10.61.1.1"]);
    client.exec("ip", ["-6", "route", "add", "default", "via", "fd00:611::1"]);

    // Back: a bridge inside the router.
    router.exec("ip", ["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    router.exec("ip", ["addr", "add", `${ROUTER4}/24`, "dev", "br0"]);
    router.exec("ip", ["addr", "add", `${ROUTER6}/64`, "dev", "br0", "nodad"]);
    router.exec("ip", ["link", "set", "br0", "up"]);
    const port = (peer: Netns, p: string, addrs: string[]) => {
      link(router, p, [], peer, "eth0", addrs);
      router.exec("ip", ["link", "set", p, "master", "br0"]);
    };
    port(lb, "p-lb", ["10.61.0.2/24", "fd00:610::2/64"]);
    router.exec("ip", ["route", "add", `${VIP4}/32`, "via", "10.61.0.2"]);
    router.exec("ip", ["-6", "route", "add", `${VIP6}/128`, "via", "fd00:610::2"]);
    router.sysctl("net.ipv4.ip_forward", "1");
    router.sysctl("net.ipv6.conf.all.forwarding", "1");
    // PMTU errors are exempt from ICMP rate limits already; make sure of it.
    router.sysctl("net.ipv4.icmp_ratelimit", "0");
    router.sysctl("net.ipv6.icmp.ratelimit", "0");

    // The lb has no default route: a VIP packet it did not mark has nowhere to go, so a
    // delivery can only come from the daemon's mark.
    lb.sysctl("net.ipv4.ip_forward", "1");
    lb.sysctl("net.ipv6.conf.all.forwarding", "1");

    const targetAddrs = targets.map((t, i) => {
      const a = { v4: `10.61.0.2${i + 1}`, v6: `fd00:610::2${i + 1}` };
      port(t, `p-t${i + 1}`, [`${a.v4}/24`, `${a.v6}/64`]);
      t.exec("ip", ["addr", "add", `${VIP4}/32`, "dev", "lo"]);
      t.exec("ip", ["addr", "add", `${VIP6}/128`, "dev", "lo"]);
      // Replies go straight to the router, never back through the lb.
      t.exec("ip", ["route", "add", "default", "via", ROUTER4]);
      t.exec("ip", ["-6", "route", "add", "default", "via", ROUTER6]);
      for (const key of ["all", "default", "eth0", "lo"]) {
        t.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
        t.sysctl(`net.ipv4.conf.${key}.arp_ignore`, "1");
        t.sysctl(`net.ipv4.conf.${key}.arp_announce`, "2");
      }
      // No black-hole probing: without the ICMP error a connection must stall, so the
      // contrast experiment means something. PMTU discovery on (DF set), as by default.
      t.sysctl("net.ipv4.tcp_mtu_probing", "0");
      t.sysctl("net.ipv4.ip_no_pmtu_disc", "0");
      return a;
    });
    return { topo, client, router, lb, targets, targetAddrs };
  } catch (err) {
    topo.destroy();
    throw err;
  }
}
