// The domain values of nflb, one definition each: load balancer names, fwmarks, weights,
// ports and port lists, queue ranges, addresses and endpoints. Pure: no I/O.
export { type Addr, canonicalAddress, type Family, familyOf, parseAddress } from "./address.js";
export { type Endpoint, parseEndpoint, parseHostPort } from "./endpoint.js";
export { DomainError, rethrowAs } from "./errors.js";
export { FRAGMENT_MARK, isFwmark, MAX_FWMARK, MIN_FWMARK, parseFwmark } from "./fwmark.js";
export {
  DEFAULT_LB_NAME,
  isLbName,
  LB_NAME_MAX_LENGTH,
  LB_NAME_PATTERN,
  LB_NAME_RULE,
  parseLbName,
} from "./names.js";
export {
  formatPortRange,
  MAX_PORT,
  mergePortRanges,
  type PortListRule,
  type PortRange,
  parsePortList,
} from "./ports.js";
export {
  MAX_QUEUE,
  MAX_QUEUES,
  parseQueue,
  parseQueueRange,
  type QueueRange,
  queueNumbers,
} from "./queues.js";
export {
  DEFAULT_WEIGHT,
  isWeight,
  MAX_WEIGHT,
  parseWeight,
  type WeightRule,
  weightProblem,
} from "./weight.js";
