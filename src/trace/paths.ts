// The control endpoint's addresses: the Unix socket lives at controlSocketPath(name)
// (src/paths.ts: <run dir>/netns-<inode>/<name>.sock); TCP is off unless asked for, on
// 127.0.0.1 unless another host is given.
import { parseHostPort as parseEndpointHostPort } from "../domain/endpoint.js";

export const DEFAULT_CONTROL_HOST = "127.0.0.1";

/** "PORT", "HOST:PORT" or "[V6]:PORT" -> host and port; HOST defaults to 127.0.0.1. */
export function parseHostPort(text: string): { host: string; port: number } {
  return parseEndpointHostPort(text, DEFAULT_CONTROL_HOST);
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x and "localhost". */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return (
    h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h)
  );
}
