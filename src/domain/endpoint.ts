// Endpoints: an address and a port, written ADDR:PORT or [V6]:PORT.
import { type Addr, canonicalAddress, parseAddress } from "./address.js";
import { DomainError } from "./errors.js";
import { MAX_PORT } from "./ports.js";

export interface Endpoint {
  /** Canonical text form. */
  address: string;
  port: number;
  family: 4 | 6;
}

function portOf(text: string, whole: string, min: number): number {
  if (text === "") {
    throw new DomainError(`invalid endpoint "${whole}": the port after ":" is missing`);
  }
  const n = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= MAX_PORT)) {
    throw new DomainError(`invalid port "${text}" in "${whole}": expected ${min}..${MAX_PORT}`);
  }
  return n;
}

/**
 * "10.0.0.1:80", "[fd00::1]:80"; a bare address ("10.0.0.1", "fd00::1", "[fd00::1]") is
 * port 0, for protocols without ports. "10.0.0.1:" (no port) is an error, not port 0.
 */
export function parseEndpoint(text: string): Endpoint {
  const t = text.trim();
  let addressText = t;
  let port = 0;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(t);
  if (bracketed) {
    addressText = bracketed[1];
    if (bracketed[2] !== undefined) port = portOf(bracketed[2], text, 0);
  } else if (t.split(":").length === 2) {
    const i = t.indexOf(":");
    addressText = t.slice(0, i);
    port = portOf(t.slice(i + 1), text, 0);
  }
  const addr: Addr | undefined = parseAddress(addressText);
  if (!addr) throw new DomainError(`invalid address "${addressText}" in "${text}"`);
  return { address: canonicalAddress(addr), port, family: addr.kind() === "ipv4" ? 4 : 6 };
}

/**
 * A listening or connecting endpoint: "PORT", "HOST:PORT" or "[V6]:PORT", HOST an
 * address or a name (default `defaultHost`), PORT 1..65535.
 */
export function parseHostPort(text: string, defaultHost: string): { host: string; port: number } {
  const t = text.trim();
  let host = defaultHost;
  let portText = t;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(t);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else if (t.includes(":")) {
    const i = t.lastIndexOf(":");
    host = t.slice(0, i);
    portText = t.slice(i + 1);
    if (host.includes(":")) {
      throw new DomainError(`invalid "${text}": write an IPv6 host as [ADDR]:PORT`);
    }
  }
  const port = /^\d+$/.test(portText) ? Number(portText) : Number.NaN;
  if (!Number.isInteger(port) || port < 1 || port > MAX_PORT || host === "") {
    throw new DomainError(`invalid "${text}": expected [HOST:]PORT with PORT 1..${MAX_PORT}`);
  }
  return { host, port };
}
