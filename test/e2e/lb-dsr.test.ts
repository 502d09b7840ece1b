// The daemon end to end in DSR mode: client -> lb (NFQUEUE -> nflb lb -> fwmark -> policy
// routing) -> target, which holds the VIP and answers the client directly.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Daemon, nflbIn, startDaemon, tryNflbIn } from "../helpers/daemon.js";
import { isRoot } from "../helpers/netns.js";
import {
  type LbTopology,
  lbTopology,
  makeDsrTargets,
  startTargetServer,
  type TargetServer,
  tally,
  tcpRequests,
  udpRequests,
} from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP4 = "10.200.0.1";
const VIP6 = "fd00:200::1";
const QUEUE = "5";

describe("nflb lb, DSR mode, IPv4 and IPv6", { skip }, () => {
  let t: LbTopology;
  const daemons: Daemon[] = [];
  const servers: TargetServer[] = [];
  const stateDir = mkdtempSync(join(tmpdir(), "nflb-e2e-"));

  before(async () => {
    process.env.NFLB_STATE_DIR = stateDir;
    t = lbTopology();
    makeDsrTargets(t, [`${VIP4}/32`, `${VIP6}/128`]);
    for (const [i, ns] of t.targets.entries()) {
      // UDP answers must come from the VIP, the address the client asked.
      servers.push(await startTargetServer(ns, `t${i + 1}`, PORT, [VIP4, VIP6]));
    }
    // One load balancer per family, each with its own queue, state and targets.
    for (const [name, vip, family, queue] of [
      ["dsr4", VIP4, "v4", QUEUE],
      ["dsr6", VIP6, "v6", String(Number(QUEUE) + 1)],
    ] as const) {
      const targets = t.targetAddrs.flatMap((a, i) => ["--target", `${i + 1}=${a[family]}`]);
      nflbIn(
        t.lb,
        "setup",
        "--name",
        name,
        "--mode",
        "dsr",
        "--vip",
        vip,
        "--queue",
        queue,
        ...targets,
      );
      daemons.push(await startDaemon(t.lb, "--name", name, "--queue", queue));
    }
  });

  after(async () => {
    for (const d of daemons) await d.stop();
    for (const s of servers) s.stop();
    if (t) {
      tryNflbIn(t.lb, "teardown", "--name", "dsr4");
      tryNflbIn(t.lb, "teardown", "--name", "dsr6");
      t.topo.destroy();
    }
    rmSync(stateDir, { recursive: true, force: true });
  });

  for (const [family, vip, localAddress, name] of [
    ["IPv4", VIP4, "10.100.0.10", "dsr4"],
    ["IPv6", VIP6, "fd00:100::10", "dsr6"],
  ] as const) {
    test(`${family}: TCP and UDP reach every target, each flow where nflb fwmark says`, async () => {
      // The client's back address is on the targets' segment, so replies bypass the lb.
      const opts = { host: vip, port: PORT, count: 60, localAddress };
      const tcp = await tcpRequests(t.client, { ...opts, firstPort: 21000 });
      const udp = await udpRequests(t.client, { ...opts, firstPort: 22000 });
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
          const mark = nflbIn(
            t.lb,
            "fwmark",
            "--name",
            name,
            "--proto",
            proto,
            "--src",
            src(first + i),
            "--dst",
            dst,
          ).trim();
          assert.equal(answers[i], `t${mark}`, `${proto} flow from port ${first + i}`);
        }
      }
    });
  }
});
