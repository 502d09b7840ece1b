// Load balancer (service) names. One pattern for every consumer: a name becomes a state
// file, counters and socket file names, the nft table nflb_<name> and the iptables chains
// NFLB-<name> and NFLB-<name>-LB, and iptables chain names hold at most 28 characters
// (29 bytes with the NUL): "NFLB-" + 20 + "-LB" = 28. No dot, so "<name>.q0.stats" and
// "<name>.sock" never collide with another name's files.
import { DomainError } from "./errors.js";

export const LB_NAME_MAX_LENGTH = 20;
export const LB_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$/;
/** The name commands use without --name. */
export const DEFAULT_LB_NAME = "nflb";
/** The rule, as error messages state it. */
export const LB_NAME_RULE = `1-${LB_NAME_MAX_LENGTH} characters from A-Z a-z 0-9 _ -, starting with a letter or digit`;

export function isLbName(value: unknown): value is string {
  return typeof value === "string" && LB_NAME_PATTERN.test(value);
}

/** The name itself, or a DomainError: invalid load balancer name "a.b": 1-20 characters ... */
export function parseLbName(value: unknown): string {
  if (!isLbName(value)) {
    throw new DomainError(`invalid load balancer name ${JSON.stringify(value)}: ${LB_NAME_RULE}`);
  }
  return value;
}
