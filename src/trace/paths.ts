// Where a daemon's control socket lives: <run dir>/netns-<inode>/<name>.sock, next to the
// setup records of the same network namespace. A path socket is reachable from every
// namespace, but a daemon serves the packets of its own one, and two namespaces may each
// run a daemon of the same name (a tier of load balancers on one host, the tests): one
// directory per namespace keeps them apart. NFLB_RUN_DIR moves the run dir.
import { join } from "node:path";
import { netnsDir } from "../netfilter/record.js";
import { validateName } from "../state/store.js";

export function controlSocketPath(name: string): string {
  return join(netnsDir(), `${validateName(name)}.sock`);
}

export const DEFAULT_CONTROL_HOST = "127.0.0.1";

/** "PORT", "HOST:PORT" or "[V6]:PORT" -> host and port; HOST defaults to 127.0.0.1. */
export function parseHostPort(text: string): { host: string; port: number } {
  const t = text.trim();
  let host = DEFAULT_CONTROL_HOST;
  let portText = t;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(t);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else if (t.includes(":")) {
    const i = t.lastIndexOf(":");
    host = t.slice(0, i);
    portText = t.slice(i + 1);
    if (host.includes(":")) throw new Error(`invalid "${text}": write an IPv6 host as [ADDR]:PORT`);
  }
  const port = /^\d+$/.test(portText) ? Number(portText) : Number.NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535 || host === "") {
    throw new Error(`invalid "${text}": expected [HOST:]PORT with PORT 1..65535`);
  }
  return { host, port };
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x and "localhost". */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return (
    h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h)
  );
}
