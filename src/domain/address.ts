// IP addresses as nflb accepts them: IPv4 as a dotted quad only ("10.1" and "010.0.0.1"
// are refused, though some parsers take them), IPv6 without a zone; printed canonically
// (RFC 5952 for IPv6), as nft and iptables print them.
import ipaddr from "ipaddr.js";

export type Addr = ipaddr.IPv4 | ipaddr.IPv6;
export type Family = 4 | 6;

/** The address, or undefined if the text is not a plain IPv4/IPv6 address. */
export function parseAddress(text: string): Addr | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (!text.includes("%") && ipaddr.IPv6.isValid(text)) return ipaddr.IPv6.parse(text);
  return undefined;
}

export function canonicalAddress(a: Addr): string {
  return a instanceof ipaddr.IPv6 ? a.toRFC5952String() : a.toString();
}

export function familyOf(a: Addr): Family {
  return a.kind() === "ipv4" ? 4 : 6;
}
