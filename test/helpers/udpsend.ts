// Fire-and-forget UDP from a namespace: `count` datagrams, each from its own source port
// (firstPort, firstPort+1, ...), no answers awaited. For tests that count packets at the
// far end (nft counters) rather than requests. Bounded in packets and time.
import type { Netns } from "./netns.js";

const SENDER = `
import dgram from "node:dgram";
const o = JSON.parse(process.argv[1]);
const payload = Buffer.alloc(o.size, 0x42);
let sent = 0;
for (let i = 0; i < o.count; i++) {
  const s = dgram.createSocket(o.host.includes(":") ? "udp6" : "udp4");
  await new Promise((resolve, reject) => {
    s.once("error", reject);
    s.bind({ port: o.firstPort + i }, () => {
      s.send(payload, o.port, o.host, (err) => {
        if (!err) sent++;
        s.close(resolve);
      });
    });
  });
  if (o.gapMs > 0) await new Promise((r) => setTimeout(r, o.gapMs));
}
process.stdout.write(String(sent));
`;

export interface UdpSendOptions {
  host: string;
  port: number;
  count: number;
  firstPort: number;
  /** Payload bytes (default 16). */
  size?: number;
  /** Pause between datagrams (default 0). */
  gapMs?: number;
}

/** Sends the datagrams from `ns`; resolves with how many were sent. */
export function sendUdp(ns: Netns, o: UdpSendOptions): Promise<number> {
  if (o.count > 5000) throw new Error("sendUdp: at most 5000 datagrams");
  const opts = { size: 16, gapMs: 0, ...o };
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", SENDER, JSON.stringify(opts)],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000 + o.count * (opts.gapMs + 5));
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`UDP sender failed (${code}): ${err}`));
      else resolve(Number(out));
    });
  });
}
