// The load-balancer topology of the end-to-end tests and the demo:
//
//   client ---- lb ---- target1
//                 \---- target2
//                  \--- target3
//
// Addresses come from the benchmarking ranges (198.18.0.0/15, RFC 2544) and a ULA
// prefix, and exist only inside these namespaces. Every host routes through the lb, so
// NAT replies return through it; for DSR the targets carry the VIP on loopback.
import { link, type Netns, Topology } from "./netns.js";

export const VIP4 = "198.19.0.1";
export const VIP6 = "fd00:19::1";
export const CLIENT4 = "198.18.0.2";
export const CLIENT6 = "fd00:18::2";

export function target4(i: number): string {
  return `198.18.${i}.2`;
}
export function target6(i: number): string {
  return `fd00:18:${i}::2`;
}

export interface LbTopology {
  topology: Topology;
  client: Netns;
  lb: Netns;
  /** targets[i] has fwmark i + 1 and addresses target4(i + 1) / target6(i + 1). */
  targets: Netns[];
  destroy(): void;
}

export function buildLbTopology(options: { targets?: number; dsr?: boolean } = {}): LbTopology {
  const count = options.targets ?? 3;
  const topology = new Topology();
  try {
    const client = topology.add("client");
    const lb = topology.add("lb");
    link(client, "eth0", [`${CLIENT4}/24`, `${CLIENT6}/64`], lb, "c0", [
      "198.18.0.1/24",
      "fd00:18::1/64",
    ]);
    client.exec("ip", ["route", "add", "default", "via", "198.18.0.1"]);
    client.exec("ip", ["-6", "route", "add", "default", "via", "fd00:18::1"]);
    lb.sysctl("net.ipv4.ip_forward", "1");
    lb.sysctl("net.ipv6.conf.all.forwarding", "1");
    lb.sysctl("net.ipv4.conf.all.rp_filter", "0");
    const targets: Netns[] = [];
    for (let i = 1; i <= count; i++) {
      const t = topology.add(`t${i}`);
      link(lb, `t${i}`, [`198.18.${i}.1/24`, `fd00:18:${i}::1/64`], t, "eth0", [
        `${target4(i)}/24`,
        `${target6(i)}/64`,
      ]);
      t.exec("ip", ["route", "add", "default", "via", `198.18.${i}.1`]);
      t.exec("ip", ["-6", "route", "add", "default", "via", `fd00:18:${i}::1`]);
      t.sysctl("net.ipv4.conf.all.rp_filter", "0");
      t.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
      if (options.dsr) {
        t.exec("ip", ["addr", "add", `${VIP4}/32`, "dev", "lo"]);
        t.exec("ip", ["-6", "addr", "add", `${VIP6}/128`, "dev", "lo", "nodad"]);
      }
      targets.push(t);
    }
    return { topology, client, lb, targets, destroy: () => topology.destroy() };
  } catch (err) {
    topology.destroy();
    throw err;
  }
}
