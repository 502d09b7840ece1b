// The demo: a client, a load balancer and three targets in network namespaces; a VIP
// balanced by the nflb daemon; real TCP connections; a target taken out and put back.
// Everything it creates lives in its own namespaces and is removed at the end.
import { LbFixture } from "../test/helpers/lbfixture.js";
import { isRoot } from "../test/helpers/netns.js";
import { tally, tcpRequests } from "../test/helpers/targets.js";

const VIP = "10.200.0.1";
const PORT = 8080;
const NAME = "demo";
const CONNECTIONS = 300;

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Runs an nflb command in the lb namespace, echoing it like a shell session. */
function nflb(f: LbFixture, ...args: string[]): string {
  say(`  lb# nflb ${args.join(" ")}`);
  const out = f.nflb(...args);
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
  let f: LbFixture | undefined;
  try {
    say("1. Building the network: client -- switch -- lb, targets t1 t2 t3 (network namespaces)");
    f = LbFixture.create();
    const { client, targetAddrs } = f.topology;
    await f.serveNames(PORT, (i) => [targetAddrs[i].v4]);
    for (const [i, a] of targetAddrs.entries()) {
      say(`   target t${i + 1} at ${a.v4}:${PORT} answers with its name`);
    }

    say(`\n2. Making the lb a load balancer for VIP ${VIP} in NAT mode`);
    say(
      `  lb# nflb setup --name ${NAME} --mode nat --vip ${VIP} --queue 0 --proto tcp ${f.targetArgs("v4").join(" ")}`,
    );
    f.setup(
      NAME,
      "--mode",
      "nat",
      "--vip",
      VIP,
      "--queue",
      "0",
      "--proto",
      "tcp",
      ...f.targetArgs("v4"),
    );
    nflb(f, "show", "--name", NAME);
    say(`  lb# nflb lb --name ${NAME} --queue 0 &`);
    await f.daemon(NAME, "0");

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
    nflb(f, "deactivate", "--name", NAME, "2");
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
    nflb(f, "activate", "--name", NAME, "2");
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
    nflb(f, "stats", "--name", NAME);
    return 0;
  } catch (err) {
    say(`demo failed: ${(err as Error).message}`);
    return 1;
  } finally {
    say("\n7. Cleaning up: daemon, rules, namespaces");
    await f?.close();
  }
}

process.exitCode = await main();
