// Whether each VIP is announced, and why. Pure: facts in, decisions out; `nflb run`
// gathers the facts (rules, data plane, health) and the announcer applies the result.
import { BgpError, type Decision, type ServiceFacts } from "./types.js";
import { formatCommunity, type NormalizedVip, validateVip } from "./validate.js";

/**
 * A service's VIPs are announced only while it is served: rules installed, data plane
 * running, first health results in, and at least minHealthy targets up. The first
 * failing condition, in that order, is the reason.
 */
export function decideService(f: ServiceFacts): Decision {
  if (!f.rulesInstalled) {
    return { announce: false, code: "no-rules", reason: "rules not installed" };
  }
  if (!f.dataPlaneRunning) {
    return { announce: false, code: "no-dataplane", reason: "data plane not running" };
  }
  if (!f.warm) {
    return { announce: false, code: "warming-up", reason: "warming up (no health results yet)" };
  }
  const min = Math.max(1, f.minHealthy);
  if (f.healthy < min) {
    const reason =
      f.healthy === 0
        ? "no healthy target"
        : `${f.healthy} healthy target${f.healthy === 1 ? "" : "s"}, min-healthy ${min}`;
    return { announce: false, code: "too-few-healthy", reason };
  }
  return {
    announce: true,
    code: "served",
    reason: `served (${f.healthy} healthy target${f.healthy === 1 ? "" : "s"}, min-healthy ${min})`,
  };
}

/** One VIP's plan: its attributes, the services carrying it and the decision. */
export interface VipPlan {
  vip: NormalizedVip;
  services: string[];
  decision: Decision;
}

const sameAttributes = (a: NormalizedVip, b: NormalizedVip) =>
  a.med === b.med &&
  a.communities.map(formatCommunity).join(",") === b.communities.map(formatCommunity).join(",");

const describe = (v: NormalizedVip) =>
  `communities [${v.communities.map(formatCommunity).join(", ")}], med ${v.med ?? "none"}`;

/**
 * Decisions per VIP. A VIP that several services share (e.g. tcp/80 and udp/53 on one
 * address) is announced only when every one of them is served: announcing it for one
 * would black-hole the other's traffic on this instance while other instances serve it.
 * Throws BgpError("invalid") for a bad VIP or one VIP with two sets of attributes.
 */
export function planVips(services: readonly ServiceFacts[]): VipPlan[] {
  const byPrefix = new Map<string, { vip: NormalizedVip; votes: [string, Decision][] }>();
  for (const s of services) {
    const decision = decideService(s);
    for (const [i, raw] of s.vips.entries()) {
      const vip = validateVip(raw, `services.${s.service}.vips[${i}]`);
      const entry = byPrefix.get(vip.prefix);
      if (!entry) {
        byPrefix.set(vip.prefix, { vip, votes: [[s.service, decision]] });
      } else if (!sameAttributes(entry.vip, vip)) {
        throw new BgpError(
          "invalid",
          `VIP ${vip.prefix} is announced with ${describe(entry.vip)} by ${entry.votes[0][0]} but with ${describe(vip)} by ${s.service}`,
        );
      } else if (!entry.votes.some(([name]) => name === s.service)) {
        entry.votes.push([s.service, decision]);
      }
    }
  }
  return [...byPrefix.values()].map(({ vip, votes }) => {
    const services = votes.map(([name]) => name);
    if (votes.length === 1) return { vip, services, decision: votes[0][1] };
    const against = votes.find(([, d]) => !d.announce);
    const decision: Decision = against
      ? { ...against[1], reason: `${against[0]}: ${against[1].reason}` }
      : { announce: true, code: "served", reason: `served by ${services.join(", ")}` };
    return { vip, services, decision };
  });
}
