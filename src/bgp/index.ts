// VIP announcement over BGP through BIRD (never a BGP speaker of our own).
//
// What lives where:
//   BIRD's own bird.conf     the operator's; one line added: include "<bird.include>";
//   <bird.include>           written by nflb (render.ts): tables nflb4/nflb6, the export
//                            filter, BFD when asked, static protocols nflb_vip4/nflb_vip6
//                            with one route per announced VIP, one BGP protocol per
//                            neighbour (nflb_<address>). Applied with `birdc configure`.
//   device nflb-bgp          a non-persistent TUN device this process holds open; every
//                            VIP route points at it, so BIRD withdraws all of them the
//                            moment the process exits or is killed (the kernel deletes
//                            the device with the process's last descriptor).
//
// Flow: ServiceFacts -> decideService/planVips (pure: announce or withdraw, and why) ->
// renderInclude (pure) -> BgpAnnouncer (write, parse-check, configure, device) -> status.
export {
  type AnnouncerOptions,
  BgpAnnouncer,
  readSessions,
  type UpdateResult,
} from "./announcer.js";
export { configure, parseCheck } from "./birdc.js";
export { decideService, planVips, type VipPlan } from "./decide.js";
export { parseBirdTime, parseProtocols, parseReply } from "./parse.js";
export {
  BFD_PROTOCOL,
  type BgpBlock,
  DEFAULT_DEVICE,
  EXPORT_FILTER,
  renderBgpBlock,
  renderInclude,
  STATIC_PROTOCOLS,
  TABLES,
} from "./render.js";
export type { BfdSpec, BgpNeighbor, BgpSpec, VipAnnouncement } from "./spec.js";
export type { VipChange } from "./track.js";
export {
  BgpError,
  type BgpErrorKind,
  type BgpStatus,
  type BirdOutcome,
  type Decision,
  type DecisionCode,
  type ServiceFacts,
  type SessionState,
  type VipState,
} from "./types.js";
export {
  type NormalizedVip,
  parseCommunity,
  protocolName,
  validateBgpSpec,
  validateDevice,
  validateVip,
} from "./validate.js";
