// The endpoint's listen address: parsed, classified (loopback or not: that decides whether
// a token is needed) and written as a URL. Pure.
import { hostname } from "node:os";
import ipaddr from "ipaddr.js";
import { parseHostPort } from "../trace/paths.js";

export const DEFAULT_HTTP_HOST = "127.0.0.1";
export const DEFAULT_HTTP_PORT = 9473;

export interface ListenAddress {
  /** An IP literal (no brackets) or "localhost". */
  host: string;
  /** 0 asks the kernel for a free port (tests). */
  port: number;
}

function parseIp(host: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(host)) return ipaddr.IPv4.parse(host);
  if (!host.includes("%") && ipaddr.IPv6.isValid(host)) return ipaddr.process(host);
  return undefined;
}

/** "PORT", "HOST:PORT" or "[V6]:PORT"; HOST is an IP address or localhost (127.0.0.1 by default). */
export function parseListen(text: string): ListenAddress {
  const { host, port } = parseHostPort(text);
  if (host !== "localhost" && !parseIp(host)) {
    throw new Error(
      `invalid listen address "${text}": the host must be an IP address or localhost`,
    );
  }
  return { host, port };
}

/** Bound here, only processes of this machine can connect: no token is needed. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === "localhost") return true;
  return parseIp(host)?.range() === "loopback";
}

/** 0.0.0.0 or ::, every address of the machine. */
export function isWildcardHost(host: string): boolean {
  return parseIp(host)?.range() === "unspecified";
}

/** The origin a browser uses for the endpoint, e.g. "http://[::1]:9473". */
export function endpointOrigin(address: ListenAddress): string {
  let host = address.host;
  // A wildcard is no address to connect to: the machine's name is the best guess.
  if (isWildcardHost(host)) host = hostname();
  else if (host.includes(":")) host = `[${host}]`;
  return `http://${host}:${address.port}`;
}

/**
 * True when a request's Host header names this machine's loopback ("127.0.0.1:9473",
 * "[::1]:9473", "localhost:8080" through an SSH tunnel). A loopback endpoint answers only
 * those: a web page whose own name was re-pointed at 127.0.0.1 (DNS rebinding) sends
 * its own name and is refused.
 */
export function isLoopbackHostHeader(header: string | undefined): boolean {
  if (!header) return false;
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::\d{1,5})?$/.exec(header.trim());
  if (!m) return false;
  return isLoopbackHost(m[1] ?? m[2]);
}

/** The URL to open: the page, with the token when the endpoint needs one. */
export function dashboardUrl(address: ListenAddress, token?: string): string {
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${endpointOrigin(address)}/${query}`;
}
