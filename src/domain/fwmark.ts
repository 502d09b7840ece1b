// Fwmarks: the packet mark that names a target (the daemon's verdict, the DNAT rule's
// match, in dsr mode also the routing table). 0 means "no mark", so targets use 1..2^32-1.
import { DomainError } from "./errors.js";

export const MIN_FWMARK = 1;
export const MAX_FWMARK = 0xffffffff;

/**
 * The packet mark nflb reserves for "fragment of VIP traffic" when a setup handles
 * fragments (setup --fragments): set by nflb's nft chain at prerouting priority -450,
 * matched by the iptables fragment queue rule, overwritten by the daemon's verdict.
 * 0x6e666c62 is "nflb" in ASCII. A setup with --fragments refuses it as a target's or
 * tier peer's fwmark; elsewhere it is an ordinary mark.
 */
export const FRAGMENT_MARK = 0x6e666c62;

const FWMARK_TEXT = /^(0x[0-9a-fA-F]+|[0-9]+)$/;

export function isFwmark(value: unknown): value is number {
  return (
    typeof value === "number" &&
    Number.isInteger(value) &&
    value >= MIN_FWMARK &&
    value <= MAX_FWMARK
  );
}

/** Decimal or 0x-hex text (or a number) -> fwmark 1..4294967295; DomainError otherwise. */
export function parseFwmark(value: string | number): number {
  const n =
    typeof value === "number" ? value : FWMARK_TEXT.test(value.trim()) ? Number(value) : Number.NaN;
  if (!isFwmark(n)) {
    throw new DomainError(`invalid fwmark "${value}": expected an integer 1..${MAX_FWMARK}`);
  }
  return n;
}
