// IP fragments through the daemon (DSR, setup --fragments): every fragment of a datagram
// reaches the target its first fragment chose, whatever the order they arrive in.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { ipPacket, PROTO_UDP, udpDatagram } from "../helpers/craft.js";
import { fragmentPacket } from "../helpers/fragment.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import { makeDsrTargets } from "../helpers/targets.js";
import { injectViaTun } from "../helpers/tun.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const VIP4 = "10.200.0.1";
const VIP6 = "fd00:200::1";
const PORT = 9100;
const TTL_MS = 400;
/** Crafted traffic comes from these sources, routed into the client through a TUN device. */
const CRAFTED4 = "10.100.3.10";
const CRAFTED6 = "fd00:103::10";

// Prints one JSON line per datagram received on the VIPs: who sent it, how long it was.
const RECORDER = String.raw`
import dgram from "node:dgram";
const [name, port, ...addrs] = process.argv.slice(1);
let pending = addrs.length;
for (const addr of addrs) {
  const s = dgram.createSocket({ type: addr.includes(":") ? "udp6" : "udp4", recvBufferSize: 1 << 20 });
  s.on("message", (m, r) => process.stdout.write(JSON.stringify({ target: name, from: r.address, sport: r.port, len: m.length }) + "\n"));
  s.bind(Number(port), addr, () => { if (--pending === 0) process.stdout.write("ready\n"); });
}
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 300_000);
`;

interface Arrival {
  target: string;
  from: string;
  sport: number;
  len: number;
}

function startRecorder(ns: Netns, name: string, arrivals: Arrival[]): Promise<ChildProcess> {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", RECORDER, name, String(PORT), VIP4, VIP6],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  let buf = "";
  return new Promise((resolve, reject) => {
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (d: string) => {
      buf += d;
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === "ready") resolve(child);
        else arrivals.push(JSON.parse(line) as Arrival);
        i = buf.indexOf("\n");
      }
    });
    child.once("exit", (code) => reject(new Error(`recorder exited ${code}`)));
  });
}

/** A UDP datagram of `size` payload bytes as one IP packet. */
function datagram(src: string, dst: string, sport: number, size: number, id: number): Uint8Array {
  const payload = new Uint8Array(size).map((_, i) => (i * 7 + sport) & 0xff);
  return ipPacket(src, dst, PROTO_UDP, udpDatagram(src, dst, sport, PORT, payload), { id });
}

/** [target, length] of each arrival, small first: the small datagram and the fragments
 * travel through different queues, so either may arrive first. */
function byLength(arrivals: Arrival[]): [string, number][] {
  return arrivals.map((a): [string, number] => [a.target, a.len]).sort((x, y) => x[1] - y[1]);
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

describe("fragments through nflb lb (DSR)", { skip }, () => {
  let f: LbFixture;
  const arrivals: Arrival[] = [];

  before(async () => {
    f = LbFixture.create();
    const { client, targets } = f.topology;
    makeDsrTargets(f.topology, [`${VIP4}/32`, `${VIP6}/128`]);
    for (const [i, ns] of targets.entries()) {
      const recorder = await startRecorder(ns, `t${i + 1}`, arrivals);
      f.onClose(() => recorder.stdin?.end());
      // Crafted sources live behind the client; nobody answers them (DSR replies go nowhere).
      ns.exec("ip", ["route", "add", `${CRAFTED4}/32`, "via", "10.100.0.10"]);
      ns.exec("ip", ["-6", "route", "add", `${CRAFTED6}/128`, "via", "fd00:100::10"]);
    }
    client.sysctl("net.ipv4.ip_forward", "1");
    client.sysctl("net.ipv6.conf.all.forwarding", "1");
    for (const [name, vip, family, queue, fragQueue] of [
      ["frag4", VIP4, "v4", "20", "21"],
      ["frag6", VIP6, "v6", "22", "23"],
    ] as const) {
      f.setup(
        name,
        "--mode",
        "dsr",
        "--vip",
        vip,
        "--queue",
        queue,
        "--fragments",
        "--frag-queue",
        fragQueue,
        ...f.targetArgs(family),
      );
      await f.daemonWith(
        name,
        "--queue",
        queue,
        "--frag-queue",
        fragQueue,
        "--ft-ttl",
        String(TTL_MS),
      );
    }
  });

  after(() => f?.close());

  function expectedTarget(lb: string, src: string, sport: number, vip: string): string {
    const ep = (a: string, p: number) => (a.includes(":") ? `[${a}]:${p}` : `${a}:${p}`);
    const mark = f.nflb(
      "fwmark",
      "--name",
      lb,
      "--proto",
      "udp",
      "--src",
      ep(src, sport),
      "--dst",
      ep(vip, PORT),
    );
    return `t${mark.trim()}`;
  }

  const arrivalsOf = (from: string, sport: number) =>
    arrivals.filter((a) => a.from.replace(/^::ffff:/, "") === from && a.sport === sport);

  for (const [family, vip, lb, src] of [
    ["IPv4", VIP4, "frag4", "10.100.1.10"],
    ["IPv6", VIP6, "frag6", "fd00:101::10"],
  ] as const) {
    test(`${family}: datagrams of 3000-10000 bytes from a real socket arrive whole where their flow goes`, async () => {
      const sizes = [3000, 4500, 6000, 8000, 10000];
      const script = String.raw`
        import dgram from "node:dgram";
        const [vip, src, port, sizes] = process.argv.slice(1);
        for (const [i, size] of JSON.parse(sizes).entries()) {
          const s = dgram.createSocket(vip.includes(":") ? "udp6" : "udp4");
          await new Promise((r) => s.bind(34000 + i, src, r));
          // A small datagram first, then the big one, from the same port: one flow.
          await new Promise((r) => s.send(Buffer.alloc(100), Number(port), vip, r));
          await new Promise((r) => s.send(Buffer.alloc(size), Number(port), vip, r));
          s.close();
        }`;
      f.topology.client.exec(process.execPath, [
        "--input-type=module",
        "-e",
        script,
        vip,
        src,
        String(PORT),
        JSON.stringify(sizes),
      ]);
      const done = await waitFor(
        () => sizes.every((_, i) => arrivalsOf(src, 34000 + i).length >= 2),
        5000,
      );
      assert.ok(
        done,
        `missing arrivals: ${JSON.stringify(arrivals.filter((a) => a.from.includes(src)))}`,
      );
      for (const [i, size] of sizes.entries()) {
        const got = arrivalsOf(src, 34000 + i);
        const want = expectedTarget(lb, src, 34000 + i, vip);
        assert.deepEqual(
          byLength(got),
          [
            [want, 100],
            [want, size],
          ],
          `flow from port ${34000 + i}`,
        );
      }
    });

    test(`${family}: crafted out of order (last fragment first, interleaved) still arrive whole`, async () => {
      const crafted = family === "IPv4" ? CRAFTED4 : CRAFTED6;
      const sizes = [3000, 5000, 7000, 10000];
      const packets: Uint8Array[] = [];
      const pending: Uint8Array[][] = [];
      for (const [i, size] of sizes.entries()) {
        const sport = 35000 + i;
        packets.push(datagram(crafted, vip, sport, 64, 100 + i));
        pending.push(
          fragmentPacket(datagram(crafted, vip, sport, size, 200 + i), 1400, 200 + i).reverse(),
        );
      }
      // Interleave the datagrams' reversed fragments: d0 last, d1 last, d0 next-to-last ...
      for (let k = 0; pending.some((p) => k < p.length); k++) {
        for (const p of pending) if (k < p.length) packets.push(p[k]);
      }
      const r = await injectViaTun(f.topology.client, {
        routes: [family === "IPv4" ? `${CRAFTED4}/32` : `${CRAFTED6}/128`],
        packets,
        lingerMs: 500,
      });
      assert.equal(r.written, packets.length, JSON.stringify(r.errors));
      const done = await waitFor(
        () => sizes.every((_, i) => arrivalsOf(crafted, 35000 + i).length >= 2),
        5000,
      );
      assert.ok(
        done,
        `missing arrivals: ${JSON.stringify(arrivals.filter((a) => a.from.includes(crafted)))}`,
      );
      for (const [i, size] of sizes.entries()) {
        const want = expectedTarget(lb, crafted, 35000 + i, vip);
        assert.deepEqual(byLength(arrivalsOf(crafted, 35000 + i)), [
          [want, 64],
          [want, size],
        ]);
      }
      const stats = JSON.parse(f.nflb("stats", "--name", lb, "--json"));
      const fq = stats.queues.find(
        (q: { fragments: { stored: number } }) => q.fragments.stored > 0,
      );
      assert.ok(fq, "fragments were held until their first fragment came");
      assert.ok(fq.fragments.reinjected >= sizes.length, JSON.stringify(fq.fragments));
    });

    test(`${family}: fragments whose first never comes are dropped, counted, and the table drains`, async () => {
      const crafted = family === "IPv4" ? CRAFTED4 : CRAFTED6;
      const lost = fragmentPacket(datagram(crafted, vip, 36000, 5000, 300), 1400, 300).slice(1);
      const statsOf = () => {
        const s = JSON.parse(f.nflb("stats", "--name", lb, "--json"));
        return s.queues.reduce(
          (
            acc: { expired: number; entries: number; held: number },
            q: { fragments: { droppedExpired: number; entries: number; held: number } },
          ) => ({
            expired: acc.expired + q.fragments.droppedExpired,
            entries: acc.entries + q.fragments.entries,
            held: acc.held + q.fragments.held,
          }),
          { expired: 0, entries: 0, held: 0 },
        );
      };
      const before = statsOf();
      await injectViaTun(f.topology.client, {
        routes: [family === "IPv4" ? `${CRAFTED4}/32` : `${CRAFTED6}/128`],
        packets: lost,
      });
      // Housekeeping expires entries once a second; TTL + 2 s is ample.
      const drained = await waitFor(() => {
        const s = statsOf();
        return s.expired - before.expired >= lost.length && s.entries === 0 && s.held === 0;
      }, TTL_MS + 2500);
      assert.ok(drained, `not drained: ${JSON.stringify(statsOf())}`);
      assert.equal(arrivalsOf(crafted, 36000).length, 0);
    });
  }
});
