// The daemon end to end in DSR mode: client -> lb (NFQUEUE -> nflb lb -> fwmark -> policy
// routing) -> target, which holds the VIP and answers the client directly.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { makeDsrTargets, tally, tcpRequests, udpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP4 = "10.200.0.1";
const VIP6 = "fd00:200::1";

describe("nflb lb, DSR mode, IPv4 and IPv6", { skip }, () => {
  let f: LbFixture;

  before(async () => {
    f = LbFixture.create();
    makeDsrTargets(f.topology, [`${VIP4}/32`, `${VIP6}/128`]);
    // UDP answers must come from the VIP, the address the client asked.
    await f.serveNames(PORT, () => [VIP4, VIP6]);
    // One load balancer per family, each with its own queue, state and targets.
    for (const [name, vip, family, queue] of [
      ["dsr4", VIP4, "v4", "5"],
      ["dsr6", VIP6, "v6", "6"],
    ] as const) {
      f.setup(name, "--mode", "dsr", "--vip", vip, "--queue", queue, ...f.targetArgs(family));
      await f.daemon(name, queue);
    }
  });

  after(() => f?.close());

  for (const [family, vip, localAddress, name] of [
    ["IPv4", VIP4, "10.100.0.10", "dsr4"],
    ["IPv6", VIP6, "fd00:100::10", "dsr6"],
  ] as const) {
    test(`${family}: TCP and UDP reach every target, each flow where nflb fwmark says`, async () => {
      // The client's back address is on the targets' segment, so replies bypass the lb.
      const opts = { host: vip, port: PORT, count: 60, localAddress };
      const tcp = await tcpRequests(f.topology.client, { ...opts, firstPort: 21000 });
      const udp = await udpRequests(f.topology.client, { ...opts, firstPort: 22000 });
      for (const answers of [tcp, udp]) {
        const counts = tally(answers);
        assert.deepEqual(Object.keys(counts).sort(), ["t1", "t2", "t3"], JSON.stringify(counts));
      }
      const src = (port: number) =>
        family === "IPv6" ? `[${localAddress}]:${port}` : `${localAddress}:${port}`;
      const dst = family === "IPv6" ? `[${vip}]:${PORT}` : `${vip}:${PORT}`;
      for (let i = 0; i < 60; i += 6) {
        for (const [proto, answers, first] of [
          ["tcp", tcp, 21000],
          ["udp", udp, 22000],
        ] as const) {
          const mark = f
            .nflb("fwmark", "--name", name, "--proto", proto, "--src", src(first + i), "--dst", dst)
            .trim();
          assert.equal(answers[i], `t${mark}`, `${proto} flow from port ${first + i}`);
        }
      }
    });
  }
});
