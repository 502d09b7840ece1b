// The demo: a client, a load balancer and three targets in network namespaces; a VIP
// balanced by the nflb daemon; real TCP connections; a target taken out and put back.
// Everything it creates lives in its own namespaces and is removed at the end.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../test/helpers/cli.js";
import { type Daemon, startDaemon } from "../test/helpers/daemon.js";
import { isRoot, type Netns } from "../test/helpers/netns.js";
import {
  type LbTopology,
  lbTopology,
  startTargetServer,
  type TargetServer,
  tally,
  tcpRequests,
} from "../test/helpers/targets.js";

const VIP = "10.200.0.1";
const PORT = 8080;
const NAME = "demo";
const CONNECTIONS = 300;

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Runs an nflb command in the lb namespace, echoing it like a shell session. */
function nflb(lb: Netns, ...args: string[]): string {
  say(`  lb# nflb ${args.join(" ")}`);
  const out = lb.exec(process.execPath, [CLI, ...args]);
  for (const line of out.trimEnd().split("\n")) say(`      ${line}`);
  return out;
}

function bars(counts: Record<string, number>, total: number): void {
  for (const name of ["t1", "t2", "t3"]) {
    const n = counts[name] ?? 0;
    const pct = (100 * n) / total;
    say(
      `    ${name}  ${"#".repeat(Math.round(pct / 2)).padEnd(50)} ${String(n).padStart(4)} (${pct.toFixed(1)}%)`,
    );
  }
  const failed = Object.entries(counts).filter(([k]) => !/^t\d$/.test(k));
  if (failed.length > 0) say(`    failed: ${JSON.stringify(Object.fromEntries(failed))}`);
}

async function main(): Promise<number> {
  if (!isRoot()) {
    say("demo: run as root (it creates network namespaces)");
    return 1;
  }
  const stateDir = mkdtempSync(join(tmpdir(), "nflb-demo-"));
  process.env.NFLB_STATE_DIR = stateDir;
  let topo: LbTopology | undefined;
  let daemon: Daemon | undefined;
  const servers: TargetServer[] = [];
  try {
    say("1. Building the network: client -- switch -- lb, targets t1 t2 t3 (network namespaces)");
    topo = lbTopology();
    const { client, lb, targets, targetAddrs } = topo;
    for (const [i, ns] of targets.entries()) {
      servers.push(await startTargetServer(ns, `t${i + 1}`, PORT, [targetAddrs[i].v4]));
      say(`   target t${i + 1} at ${targetAddrs[i].v4}:${PORT} answers with its name`);
    }

    say(`\n2. Making the lb a load balancer for VIP ${VIP} in NAT mode`);
    const targetArgs = targetAddrs.flatMap((a, i) => ["--target", `${i + 1}=${a.v4}`]);
    nflb(
      lb,
      "setup",
      "--name",
      NAME,
      "--mode",
      "nat",
      "--vip",
      VIP,
      "--queue",
      "0",
      "--proto",
      "tcp",
      ...targetArgs,
    );
    nflb(lb, "show", "--name", NAME);
    say(`  lb# nflb lb --name ${NAME} --queue 0 &`);
    daemon = await startDaemon(lb, "--name", NAME, "--queue", "0");

    say(
      `\n3. The client opens ${CONNECTIONS} TCP connections to ${VIP}:${PORT}, from distinct source ports`,
    );
    const first = await tcpRequests(client, {
      host: VIP,
      port: PORT,
      count: CONNECTIONS,
      firstPort: 20000,
    });
    bars(tally(first), CONNECTIONS);

    say("\n4. Taking target t2 out of service");
    nflb(lb, "deactivate", "--name", NAME, "2");
    const second = await tcpRequests(client, {
      host: VIP,
      port: PORT,
      count: CONNECTIONS,
      firstPort: 20000,
    });
    say("   the same source ports again:");
    bars(tally(second), CONNECTIONS);
    let moved = 0;
    let movedOthers = 0;
    for (let i = 0; i < CONNECTIONS; i++) {
      if (first[i] !== second[i]) {
        moved++;
        if (first[i] !== "t2") movedOthers++;
      }
    }
    say(
      `   ${moved} of ${CONNECTIONS} flows changed target: t2's flows, and ${movedOthers} of the others (Maglev keeps the rest)`,
    );

    say("\n5. Putting t2 back");
    nflb(lb, "activate", "--name", NAME, "2");
    const third = await tcpRequests(client, {
      host: VIP,
      port: PORT,
      count: CONNECTIONS,
      firstPort: 20000,
    });
    bars(tally(third), CONNECTIONS);
    const same = third.filter((a, i) => a === first[i]).length;
    say(`   ${same} of ${CONNECTIONS} flows are back on the target they had in step 3`);

    say("\n6. What the daemon counted");
    nflb(lb, "stats", "--name", NAME);
    return 0;
  } catch (err) {
    say(`demo failed: ${(err as Error).message}`);
    return 1;
  } finally {
    say("\n7. Cleaning up: daemon, rules, namespaces");
    await daemon?.stop();
    for (const s of servers) s.stop();
    if (topo) {
      topo.lb.tryExec(process.execPath, [CLI, "teardown", "--name", NAME]);
      topo.topo.destroy();
    }
    rmSync(stateDir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
