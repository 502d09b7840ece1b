// dsr --fragments end to end, without the daemon. A stand-in sets the mark the daemon
// would (after the bypassed queue rules, by a hash of the source address only, so every
// fragment of a datagram gets the same target). Conntrack is in use in the lb (a foreign
// `ct state` rule), so it would reassemble: the control case shows it does without
// --fragments, the others show that with --fragments
//   - the fragments cross the lb one by one (a counter at the forward hook sees 3),
//   - every fragment (the first too) met the fragment queue rule and none the normal one,
//   - VIP traffic has no conntrack entry at all,
//   - the datagram arrives whole at one target, which answers with the byte count,
//   - a packet written into the TUN device meets the same rules and is forwarded like a
//     packet from the wire (and would be dropped with a strict rp_filter on the TUN).
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import type { SetupCounters, SetupSpec } from "../../src/netfilter/index.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import {
  type LbTopology,
  lbTopology,
  makeDsrTargets,
  netfilter,
  netfilterCall,
} from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8090;
const VIP4 = "10.200.0.1";
const VIP6 = "fd00:200::1";
/** The client's back address: on-link for the targets, which answer it directly (dsr). */
const CLIENT4 = "10.100.0.10";
const CLIENT6 = "fd00:100::10";
const SIZE = 4000;
const ADDON = new URL("../../src/native/addon.js", import.meta.url).href;

function spec(over: Partial<SetupSpec>): SetupSpec {
  return {
    name: "frag",
    mode: "dsr",
    vips: [VIP4],
    targets: [],
    queue: { first: 7, last: 7 },
    queueBypass: true,
    synOnly: false,
    protocols: ["udp"],
    ports: String(PORT),
    statistic: "nth",
    snat: false,
    ...over,
  };
}

/** Answers every datagram with "<name>:<bytes received>" from the address it was sent to. */
const SERVER = String.raw`
import dgram from "node:dgram";
const [name, port, list] = process.argv.slice(1);
let pending = 0;
for (const addr of list.split(",")) {
  pending++;
  const u = dgram.createSocket(addr.includes(":") ? "udp6" : "udp4");
  u.on("message", (msg, rinfo) => u.send(name + ":" + msg.length, rinfo.port, rinfo.address));
  u.on("error", (e) => { console.error(String(e)); process.exit(1); });
  u.bind(Number(port), addr, () => { if (--pending === 0) process.stdout.write("ready\n"); });
}
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 600_000);
`;

/** One datagram of `size` bytes, sent once (no retry: the counters must be exact). */
const CLIENT = `
import dgram from "node:dgram";
const [host, port, local, sport, size] = process.argv.slice(1);
const u = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
const t = setTimeout(() => { console.log("ERR:timeout"); process.exit(0); }, 5000);
u.on("message", (m) => { clearTimeout(t); console.log(m.toString()); u.close(); });
u.bind({ address: local, port: Number(sport) }, () =>
  u.send(Buffer.alloc(Number(size), 0x61), Number(port), host));
`;

/** Waits for one datagram on each of the ports of `local` and prints them as JSON. */
const LISTENER = String.raw`
import dgram from "node:dgram";
const [local, ports] = process.argv.slice(1);
const got = {};
const list = ports.split(",");
const done = () => { console.log(JSON.stringify(got)); process.exit(0); };
const t = setTimeout(done, 5000);
let pending = list.length;
for (const p of list) {
  const u = dgram.createSocket("udp4");
  u.on("message", (m) => {
    got[p] = m.toString();
    u.close();
    if (Object.keys(got).length === list.length) { clearTimeout(t); done(); }
  });
  u.bind({ address: local, port: Number(p) }, () => { if (--pending === 0) process.stderr.write("ready\n"); });
}
`;

/** Writes packets (hex, each starting at the IP header) into a TUN device, as the daemon. */
const INJECT = `
const { loadAddon } = await import(process.argv[1]);
const [, tun, packets] = process.argv.slice(1);
const a = loadAddon();
const t = a.tunOpen(tun);
for (const hex of JSON.parse(packets)) {
  const b = Buffer.from(hex, "hex");
  const n = a.fdWrite(t.fd, b, b.length);
  if (n !== b.length) { console.error("fdWrite: " + n); process.exit(1); }
}
// Keep the device attached a moment (a persistent TUN loses its carrier without reader).
setTimeout(() => { a.fdClose(t.fd); console.log(t.name); }, 300);
`;

/** Runs a node script in `ns`; resolves with its stdout (bounded by `limitMs`). */
function runScript(
  ns: Netns,
  script: string,
  args: readonly string[],
  opts: { limitMs?: number; onReady?: () => void } = {},
): Promise<string> {
  const child = ns.spawn(process.execPath, ["--input-type=module", "-e", script, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.limitMs ?? 15_000);
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
      if (opts.onReady && err.includes("ready\n")) {
        const cb = opts.onReady;
        opts.onReady = undefined;
        cb();
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`script failed (${code}): ${err}`));
      else resolve(out.trim());
    });
  });
}

// ---- hand-made IPv4/UDP packets for the TUN ---------------------------------------------

function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i += 2) sum += (buf[i] << 8) | (buf[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const v4bytes = (a: string) => Buffer.from(a.split(".").map(Number));

/** The UDP datagram (header + payload) with its checksum. */
function udp4(src: string, dst: string, sport: number, dport: number, payload: Buffer): Buffer {
  const u = Buffer.alloc(8 + payload.length);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(u.length, 4);
  payload.copy(u, 8);
  const pseudo = Buffer.alloc(12);
  v4bytes(src).copy(pseudo, 0);
  v4bytes(dst).copy(pseudo, 4);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(u.length, 10);
  u.writeUInt16BE(checksum(Buffer.concat([pseudo, u])) || 0xffff, 6);
  return u;
}

/** IPv4 packets carrying `l4` (UDP), cut into fragments of at most `mtu` bytes. */
function ipv4Packets(src: string, dst: string, l4: Buffer, id: number, mtu = 1500): Buffer[] {
  const step = Math.floor((mtu - 20) / 8) * 8;
  const out: Buffer[] = [];
  for (let off = 0; off < l4.length; off += step) {
    const data = l4.subarray(off, off + step);
    const more = off + step < l4.length;
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(20 + data.length, 2);
    h.writeUInt16BE(id, 4);
    h.writeUInt16BE((more ? 0x2000 : 0) | (off / 8), 6);
    h[8] = 64;
    h[9] = 17;
    v4bytes(src).copy(h, 12);
    v4bytes(dst).copy(h, 16);
    h.writeUInt16BE(checksum(h), 10);
    out.push(Buffer.concat([h, data]));
  }
  return out;
}

// ---- the stand-in ------------------------------------------------------------------

/**
 * At mangle + 5 (after the queue rules, whose --queue-bypass lets packets through when
 * nobody listens): the mark the daemon would give, by source address only, so that later
 * fragments (no ports) get their datagram's target. At the forward hook: what crosses
 * (UDP only: a client without a socket answers the target's reply with an ICMP error to
 * the VIP, which crosses too).
 */
function standIn(lb: Netns, vip: string): void {
  const ip = vip.includes(":") ? "ip6" : "ip";
  const fragment = ip === "ip" ? "ip frag-off & 0x3fff != 0" : "exthdr frag exists";
  lb.exec(
    "nft",
    ["-f", "-"],
    `table inet standin {
  chain pre { type filter hook prerouting priority mangle + 5; policy accept;
    ${ip} daddr ${vip} meta mark set jhash ${ip} saddr mod 3 seed 0x5 offset 1;
  }
  chain forward_watch { type filter hook forward priority 0; policy accept;
    ${ip} daddr ${vip} meta l4proto udp counter comment "to_vip";
    ${ip} daddr ${vip} ${fragment} counter comment "fragments";
    ${ip} saddr ${vip} counter comment "from_vip";
  }
}
`,
  );
}

function standInCounters(lb: Netns): Record<string, { packets: number; bytes: number }> {
  const out = lb.exec("nft", ["list", "table", "inet", "standin"]);
  const counters: Record<string, { packets: number; bytes: number }> = {};
  for (const m of out.matchAll(/counter packets (\d+) bytes (\d+) comment "(\w+)"/g)) {
    counters[m[3]] = { packets: Number(m[1]), bytes: Number(m[2]) };
  }
  return counters;
}

describe("setup --fragments (dsr) with a stand-in for the daemon", { skip }, () => {
  let t: LbTopology;
  const servers: (() => void)[] = [];

  before(async () => {
    t = lbTopology();
    makeDsrTargets(t, [`${VIP4}/32`, `${VIP6}/128`]);
    for (const [i, ns] of t.targets.entries()) {
      const child = ns.spawn(
        process.execPath,
        ["--input-type=module", "-e", SERVER, `t${i + 1}`, String(PORT), `${VIP4},${VIP6}`],
        { stdio: ["pipe", "pipe", "pipe"] },
      );
      servers.push(() => {
        child.stdin?.end();
        if (child.exitCode === null) child.kill("SIGTERM");
      });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("server did not start")), 10_000);
        child.stdout?.on("data", (d) => {
          if (String(d).includes("ready")) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.on("exit", (code) => reject(new Error(`server exited (${code})`)));
      });
    }
    // A firewall that uses conntrack: from now on the lb's conntrack (and its
    // defragmentation at prerouting -400) is active for IPv4 and IPv6.
    t.lb.exec(
      "nft",
      ["-f", "-"],
      `table inet fw {
  chain forward { type filter hook forward priority filter; policy accept; ct state invalid counter; }
}
`,
    );
  });
  afterEach(() => {
    netfilterCall(t.lb, "teardown", "frag");
    t.lb.tryExec("nft", ["delete", "table", "inet", "standin"]);
    t.lb.tryExec("conntrack", ["-F"]);
  });
  after(() => {
    for (const stop of servers) stop();
    t?.topo.destroy();
  });

  const targets = (family: "v4" | "v6") =>
    t.targetAddrs.map((a, i) => ({ fwmark: i + 1, address: a[family], weight: 1 }));

  for (const family of ["v4", "v6"] as const) {
    const vip = family === "v4" ? VIP4 : VIP6;
    const local = family === "v4" ? CLIENT4 : CLIENT6;
    const send = (sport: number) =>
      runScript(t.client, CLIENT, [vip, String(PORT), local, String(sport), String(SIZE)]);

    test(`${family} control, without --fragments: conntrack reassembles before the queue`, async () => {
      netfilter(t.lb, "setup", spec({ vips: [vip], targets: targets(family) }));
      standIn(t.lb, vip);
      const answer = await send(43000);
      assert.match(answer, /^t[123]:4000$/);
      const w = standInCounters(t.lb);
      // One whole datagram crossed the lb (fragmented again on the way out).
      assert.equal(w.to_vip.packets, 1, JSON.stringify(w));
      assert.equal(w.fragments.packets, 0);
      assert.equal(w.to_vip.bytes, SIZE + 8 + (family === "v4" ? 20 : 40));
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "frag");
      assert.equal(c.queued.packets, 1);
      assert.equal(c.fragments, undefined);
      assert.match(t.lb.exec("conntrack", ["-L", "-d", vip]), new RegExp(`dport=${PORT}`));
    });

    test(`${family} --fragments: not reassembled, all fragments to the fragment queue, arrives whole`, async () => {
      netfilter(
        t.lb,
        "setup",
        spec({ vips: [vip], targets: targets(family), fragments: { queue: 8, tun: "nflb-frag" } }),
      );
      standIn(t.lb, vip);
      const answer = await send(43100);
      assert.match(answer, /^t[123]:4000$/, "the datagram arrived whole at one target");
      const w = standInCounters(t.lb);
      // MTU 1500: 1480 + 1480 + 1048 bytes of UDP (v4), 1448 + 1448 + 1112 (v6).
      assert.equal(w.to_vip.packets, 3, JSON.stringify(w));
      assert.equal(w.fragments.packets, 3);
      const headers = family === "v4" ? 3 * 20 : 3 * (40 + 8);
      assert.equal(w.to_vip.bytes, SIZE + 8 + headers);
      assert.equal(w.from_vip.packets, 0, "the answer went directly to the client");
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "frag");
      assert.deepEqual(c.fragments, { packets: 3, bytes: SIZE + 8 + headers });
      assert.equal(c.queued.packets, 0, "the first fragment went to the fragment queue too");
      // The stand-in's mark took all three to one target (nflb counts by mark).
      const byTarget = c.targets.map((x) => x.packets);
      assert.deepEqual(
        byTarget.filter((p) => p > 0),
        [3],
        JSON.stringify(c.targets),
      );
      assert.equal(
        `t${byTarget.indexOf(3) + 1}`,
        answer.split(":")[0],
        "the marked target answered",
      );
      // notrack: no conntrack entry for VIP traffic, although conntrack is in use.
      assert.doesNotMatch(t.lb.exec("conntrack", ["-L", "-d", vip]), /dport/);
      // A small datagram still takes the normal queue.
      const small = await runScript(t.client, CLIENT, [vip, String(PORT), local, "43101", "100"]);
      assert.match(small, /^t[123]:100$/);
      const c2 = netfilter<SetupCounters>(t.lb, "readCounters", "frag");
      assert.equal(c2.queued.packets, 1);
      assert.equal(c2.fragments?.packets, 3);
    });
  }

  test("v4: packets written into the TUN device are queued and forwarded like packets from the wire", async () => {
    // A strict default, so that the TUN device would get it, were setup not to change it.
    t.lb.sysctl("net.ipv4.conf.default.rp_filter", "1");
    try {
      netfilter(
        t.lb,
        "setup",
        spec({ targets: targets("v4"), fragments: { queue: 8, tun: "nflb-frag" } }),
      );
      assert.equal(t.lb.exec("cat", ["/proc/sys/net/ipv4/conf/nflb-frag/rp_filter"]).trim(), "0");
      standIn(t.lb, VIP4);

      const whole = ipv4Packets(
        CLIENT4,
        VIP4,
        udp4(CLIENT4, VIP4, 45000, PORT, Buffer.from("hello")),
        0x1234,
      );
      const frags = ipv4Packets(
        CLIENT4,
        VIP4,
        udp4(CLIENT4, VIP4, 45001, PORT, Buffer.alloc(SIZE, 0x62)),
        0x1235,
      );
      assert.deepEqual(
        frags.map((p) => p.length),
        [1500, 1500, 1068],
      );
      const inject = (packets: Buffer[]) =>
        runScript(t.lb, INJECT, [
          ADDON,
          "nflb-frag",
          JSON.stringify(packets.map((p) => p.toString("hex"))),
        ]);

      // The answers go to the client's address, directly from the target.
      let injected: Promise<string> | undefined;
      const answers = await runScript(t.client, LISTENER, [CLIENT4, "45000,45001"], {
        onReady: () => {
          // Last fragment first, as the daemon re-injects fragments that came early.
          injected = inject([...whole, ...frags.reverse()]);
        },
      });
      assert.equal(await injected, "nflb-frag");
      const got = JSON.parse(answers) as Record<string, string>;
      assert.match(got["45000"] ?? "", /^t[123]:5$/, answers);
      assert.equal(got["45001"], got["45000"]?.replace(/:5$/, `:${SIZE}`), answers);

      const w = standInCounters(t.lb);
      assert.equal(w.to_vip.packets, 4, JSON.stringify(w));
      assert.equal(w.fragments.packets, 3);
      const c = netfilter<SetupCounters>(t.lb, "readCounters", "frag");
      assert.equal(c.queued.packets, 1, "the whole datagram met the normal queue rule");
      assert.equal(c.fragments?.packets, 3, "the fragments met the fragment queue rule");

      // Why rp_filter 0: with a strict one the kernel drops what comes in on the TUN
      // (the client's address routes elsewhere), after the queue rules saw it.
      t.lb.sysctl("net.ipv4.conf.nflb-frag.rp_filter", "1");
      await inject(whole);
      assert.equal(standInCounters(t.lb).to_vip.packets, 4, "forwarded despite rp_filter 1");
      assert.equal(netfilter<SetupCounters>(t.lb, "readCounters", "frag").queued.packets, 2);
      // Setting up again repairs it.
      netfilter(
        t.lb,
        "setup",
        spec({ targets: targets("v4"), fragments: { queue: 8, tun: "nflb-frag" } }),
      );
      assert.equal(t.lb.exec("cat", ["/proc/sys/net/ipv4/conf/nflb-frag/rp_filter"]).trim(), "0");
      await inject(whole);
      assert.equal(standInCounters(t.lb).to_vip.packets, 5);
    } finally {
      t.lb.sysctl("net.ipv4.conf.default.rp_filter", "0");
    }
  });
});
