// `nflb setup` / `nflb teardown`: the rule sets for nat, dsr and statistic load balancing.
//
// What lives where (name = the setup's name):
//   nft table inet nflb_<name>          sets of VIPs/marks, per-target named counters,
//                                       DNAT by mark, CONNMARK save/restore, --snat
//   iptables-nft mangle NFLB-<name>     VIP -> NFQUEUE (nat, dsr); jumps from PREROUTING
//                                       and OUTPUT (iptables-nft: no nft queue here)
//   iptables-nft nat NFLB-<name>(-LB)   statistic nth/random + DNAT (statistic)
//   ip rule pref P fwmark N table N     dsr, with `default via <target> table N`
//   --proto/--ports: per VIP also ICMP queue rules (comment nflb:<name>:icmp): echo
//     requests, and in dsr the errors quoting a packet, keyed by the daemon on that packet
//   dsr --tier-peer F=ADDR: like a target, `ip rule fwmark F table F` + default via ADDR
//     (the fragments the daemon hands to the tier instance that owns them)
//   dsr --fragments: in the nft table a chain at prerouting -450 (VIP traffic: notrack,
//     fragments: mark FRAGMENT_MARK), in NFLB-<name> the fragment queue rule ahead of the
//     others, and a persistent TUN device (alias nflb:<name>:fragments, rp_filter 0)
//   /run/nflb/netns-<inode>/<name>.setup.json   the record teardown works from
//
// Requirements the rules cannot meet by themselves (document them to users):
//   nat: targets must route their replies back through the load balancer, unless --snat.
//   dsr: targets carry the VIPs themselves (e.g. on lo, with arp_ignore=1/arp_announce=2
//        and relaxed rp_filter) and sit on a directly connected network; the VIPs must not
//        be local addresses of the load balancer; on a one-armed load balancer turn off
//        ICMP redirects, or clients learn to bypass it.
//   --fragments: net.ipv4.conf.all.rp_filter must not be 1 (it overrides the TUN's 0);
//        all fragments of the balanced protocols to the VIPs are queued whatever their
//        ports (later fragments carry none), so the daemon applies --ports itself.

export { runDir } from "../paths.js";
export { readSetupDetails, readSetupRecord, setup, teardown } from "./apply.js";
export { readCounters } from "./counters.js";
export { operation, parseOperationFault } from "./faults.js";
export type { SetupRecord } from "./record.js";
export { listRecords as listSetups } from "./record.js";
export {
  buildPlan,
  nthSlots,
  type Plan,
  portChunks,
  type RenderedSetup,
  renderPlan,
  renderSetup,
} from "./render.js";
export {
  type FaultPoint,
  FRAGMENT_MARK,
  type OperationFault,
  type RuleCounter,
  type SetupCompanion,
  type SetupCounters,
  SetupError,
  type SetupFragments,
  type SetupMode,
  type SetupOptions,
  type SetupProtocol,
  type SetupSpec,
  type SetupTarget,
  type SetupTierPeer,
  type TeardownOptions,
} from "./types.js";
export { normalizeSpec, parsePorts, validateSpec, validTunName } from "./validate.js";
