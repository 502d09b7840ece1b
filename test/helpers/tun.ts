// Injects crafted packets into a network namespace through a TUN device opened there with
// the project's addon (IFF_TUN|IFF_NO_PI: each write is one packet starting at the IP
// header). The packets enter the namespace's stack as if received on the TUN interface;
// with forwarding on, the namespace routes them on. Bounded in packets and time.
import { fileURLToPath } from "node:url";
import type { Netns } from "./netns.js";

const ADDON = fileURLToPath(new URL("../../src/native/addon.js", import.meta.url));

// Reads {routes, packets (hex), intervalMs, lingerMs} as JSON on stdin; prints a JSON result.
const SCRIPT = `
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
const { loadAddon } = await import(process.argv[1]);
const o = JSON.parse(readFileSync(0, "utf8"));
const a = loadAddon();
const t = a.tunOpen("nflbtun%d");
const ip = (...args) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
ip("link", "set", t.name, "up");
// Routes to the crafted sources through the TUN: the reverse path filter accepts them.
for (const r of o.routes) ip(r.includes(":") ? "-6" : "-4", "route", "add", r, "dev", t.name);
const rx = () => Number(readFileSync("/sys/class/net/" + t.name + "/statistics/rx_packets", "utf8"));
const rxBefore = rx();
const errors = [];
let written = 0;
for (const hex of o.packets) {
  const p = Buffer.from(hex, "hex");
  const n = a.fdWrite(t.fd, p, p.length);
  if (n === p.length) written++;
  else errors.push(n < 0 ? a.strerror(n) : "short write " + n);
  if (o.intervalMs > 0) await sleep(o.intervalMs);
}
// Closing the device drops what is still in its backlog: let the stack forward first.
await sleep(o.lingerMs);
process.stdout.write(JSON.stringify({ name: t.name, written, rx: rx() - rxBefore, errors }));
a.fdClose(t.fd);
`;

export interface TunInjection {
  /** Prefixes routed to the TUN device (the crafted source addresses). */
  routes?: readonly string[];
  packets: readonly Uint8Array[];
  /** Pause between packets (default 0). */
  intervalMs?: number;
  /** Time the device stays open after the last write (default 300 ms). */
  lingerMs?: number;
  /** The whole run is killed after this (default 20 s). */
  timeoutMs?: number;
}

export interface TunResult {
  /** The TUN device's name (it is gone once the script ends). */
  name: string;
  /** Packets written whole. */
  written: number;
  /** The device's rx_packets increase: packets the stack took in. */
  rx: number;
  errors: string[];
}

/** Opens a TUN device in `ns`, routes `routes` to it, writes `packets`, closes it. */
export function injectViaTun(ns: Netns, o: TunInjection): Promise<TunResult> {
  if (o.packets.length > 10_000) throw new Error("injectViaTun: at most 10000 packets");
  const input = JSON.stringify({
    routes: o.routes ?? [],
    packets: o.packets.map((p) =>
      Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString("hex"),
    ),
    intervalMs: o.intervalMs ?? 0,
    lingerMs: o.lingerMs ?? 300,
  });
  const child = ns.spawn(process.execPath, ["--input-type=module", "-e", SCRIPT, ADDON], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 20_000);
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code !== 0)
        reject(new Error(`TUN injection in ${ns.name} failed (${code ?? signal}): ${err}`));
      else resolve(JSON.parse(out) as TunResult);
    });
    child.stdin?.end(input);
  });
}
