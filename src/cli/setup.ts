// setup and teardown: turn this host (or network namespace) into a load balancer.
import { type Command, InvalidArgumentError } from "commander";
import ipaddr from "ipaddr.js";
import { parseFwmark } from "../domain/fwmark.js";
import { parseQueue, parseQueueRange } from "../domain/queues.js";
import { parseWeight } from "../domain/weight.js";
import {
  type OperationFault,
  parseOperationFault,
  renderSetup,
  type SetupSpec,
  type SetupTarget,
  type SetupTierPeer,
  validateSpec,
} from "../netfilter/index.js";
import { planService, provisionService, removeService } from "../service/provision.js";
import { action, addNameOption, CliError, printJson, requireRoot } from "./common.js";
import { defaultFragTun } from "./lb.js";

/** FWMARK=ADDRESS[@WEIGHT], e.g. 1=10.0.1.1 or 2=fd00::2@3 */
export function parseTarget(text: string, previous: SetupTarget[] = []): SetupTarget[] {
  const match = /^([^=]+)=([^@]+)(?:@(\d+))?$/.exec(text.trim());
  if (!match) throw new InvalidArgumentError(`expected FWMARK=ADDRESS[@WEIGHT], got "${text}"`);
  let fwmark: number;
  try {
    fwmark = parseFwmark(match[1]);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  if (!ipaddr.isValid(match[2]))
    throw new InvalidArgumentError(`invalid target address "${match[2]}"`);
  let weight = 1;
  if (match[3] !== undefined) {
    try {
      weight = parseWeight(match[3], { allowZero: true });
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  }
  return [...previous, { fwmark, address: match[2], weight }];
}

/** FWMARK=ADDRESS, e.g. 102=10.0.0.3: another instance of the load-balancer tier. */
export function parseTierPeer(text: string, previous: SetupTierPeer[] = []): SetupTierPeer[] {
  const match = /^([^=]+)=(.+)$/.exec(text.trim());
  if (!match) throw new InvalidArgumentError(`expected FWMARK=ADDRESS, got "${text}"`);
  let fwmark: number;
  try {
    fwmark = parseFwmark(match[1]);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  if (!ipaddr.isValid(match[2]))
    throw new InvalidArgumentError(`invalid tier peer address "${match[2]}"`);
  return [...previous, { fwmark, address: match[2] }];
}

function collectList(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(",")
      .map((v) => v.trim())
      .filter((v) => v !== ""),
  ];
}

interface SetupOptions {
  name: string;
  mode: string;
  vip: string[];
  target: SetupTarget[];
  queue: string;
  queueBypass?: boolean;
  synOnly?: boolean;
  proto: string[];
  ports: string;
  statistic: string;
  snat?: boolean;
  fragments?: boolean;
  fragQueue?: string;
  fragTun?: string;
  tierPeer: SetupTierPeer[];
  activate: boolean;
  dryRun?: boolean;
  json?: boolean;
}

function specFrom(opts: SetupOptions): SetupSpec {
  if (opts.mode !== "nat" && opts.mode !== "dsr" && opts.mode !== "statistic") {
    throw new CliError(`invalid --mode "${opts.mode}": expected nat, dsr or statistic`);
  }
  if (opts.statistic !== "nth" && opts.statistic !== "random") {
    throw new CliError(`invalid --statistic "${opts.statistic}": expected nth or random`);
  }
  for (const p of opts.proto) {
    if (p !== "tcp" && p !== "udp" && p !== "sctp")
      throw new CliError(`invalid --proto "${p}": tcp, udp or sctp`);
  }
  if (opts.vip.length === 0) throw new CliError("give at least one --vip");
  if (opts.target.length === 0) throw new CliError("give at least one --target FWMARK=ADDRESS");
  const queue = parseQueueRange(opts.queue);
  const spec: SetupSpec = {
    name: opts.name,
    mode: opts.mode,
    vips: opts.vip,
    targets: opts.target,
    queue,
    queueBypass: opts.queueBypass === true,
    synOnly: opts.synOnly === true,
    protocols: opts.proto as SetupSpec["protocols"],
    ports: opts.ports,
    statistic: opts.statistic,
    snat: opts.snat === true,
  };
  if (opts.fragments) {
    const fq = opts.fragQueue === undefined ? spec.queue.last + 1 : parseQueue(opts.fragQueue);
    // Default TUN name: nflb-<name>, cut to IFNAMSIZ - 1 bytes.
    spec.fragments = { queue: fq, tun: opts.fragTun ?? defaultFragTun(opts.name) };
  } else if (opts.fragQueue !== undefined || opts.fragTun !== undefined) {
    throw new CliError("--frag-queue and --frag-tun need --fragments");
  }
  // Only when given: the spec is recorded as it is.
  if (opts.tierPeer.length > 0) spec.tierPeers = opts.tierPeer;
  validateSpec(spec);
  return spec;
}

/**
 * Test-only: NFLB_TEST_FAULT ("kill-after:12", ...) strikes at one operation of setup or
 * teardown, so that tests can kill the real command at every step boundary.
 */
function testFault(): OperationFault | undefined {
  const text = process.env.NFLB_TEST_FAULT;
  return text ? parseOperationFault(text) : undefined;
}

/** The daemon options that match a setup's fragment queue and TUN device. */
function fragmentArgs(spec: SetupSpec): string {
  if (!spec.fragments) return "";
  const tun =
    spec.fragments.tun === defaultFragTun(spec.name) ? "" : ` --frag-tun ${spec.fragments.tun}`;
  return ` --frag-queue ${spec.fragments.queue}${tun}`;
}

export function registerSetupCommands(program: Command): void {
  addNameOption(
    program
      .command("setup")
      .description("install the rules that make this host (or netns) a load balancer for a VIP"),
  )
    .requiredOption(
      "--mode <mode>",
      "nat (DNAT by fwmark), dsr (policy routing by fwmark) or statistic (kernel only)",
    )
    .option("--vip <addr>", "virtual IP, IPv4 or IPv6 (repeat or comma-separate)", collectList, [])
    .option("--target <fwmark=addr[@weight]>", "a real target (repeat)", parseTarget, [])
    .option("--queue <q>", "NFQUEUE number or range FIRST:LAST (nat, dsr)", "0")
    .option("--queue-bypass", "accept packets when no daemon listens on the queue (nat, dsr)")
    .option("--syn-only", "queue only new TCP connections; conntrack carries the rest (nat)")
    .option(
      "--proto <list>",
      "balance only these protocols: tcp,udp,sctp (default: all)",
      collectList,
      [],
    )
    .option("--ports <list>", 'balance only these destination ports, e.g. "80,443,8000-8100"', "")
    .option("--statistic <how>", "statistic mode: nth (round robin) or random (by weight)", "nth")
    .option(
      "--snat",
      "masquerade towards the targets (nat), when they do not route back through this host",
    )
    .option(
      "--fragments",
      "dsr: the daemon handles fragments (no reassembly; all fragments to a queue of their own)",
    )
    .option("--frag-queue <n>", "NFQUEUE for fragments (default: the last --queue + 1)")
    .option("--frag-tun <name>", "TUN device for re-injected fragments (default: nflb-<name>)")
    .option(
      "--tier-peer <fwmark=addr>",
      "dsr --fragments: another load-balancer instance of the tier (nflb lb --tier), reached like a target by its fwmark (repeat)",
      parseTierPeer,
      [],
    )
    .option(
      "--no-activate",
      "do not create the Maglev state or activate the targets in it (nat, dsr)",
    )
    .option("--dry-run", "print the rules instead of applying them")
    .option("--json", "with --dry-run: machine-readable output")
    .action(
      action(async (opts: SetupOptions) => {
        const spec = specFrom(opts);
        const service = { setup: spec, activate: opts.activate };
        if (!opts.dryRun) requireRoot("nflb setup");
        // Every precondition of the state too, before anything is printed or changed (a
        // dry run without root may not be able to open the state: it renders only).
        if (!opts.dryRun || process.getuid?.() === 0) planService(service);
        if (opts.dryRun) {
          const rendered = renderSetup(spec);
          if (opts.json) printJson(rendered);
          else {
            process.stdout.write(`# nft -f -\n${rendered.nft}\n`);
            for (const cmd of rendered.iptables) process.stdout.write(`${cmd.join(" ")}\n`);
            for (const cmd of rendered.ipRules) process.stdout.write(`${cmd.join(" ")}\n`);
          }
          return;
        }
        await provisionService(service, {
          failAt: testFault(),
          warn: (m) => process.stderr.write(`nflb: warning: ${m}\n`),
        });
        process.stdout.write(
          `load balancer "${spec.name}" set up: mode ${spec.mode}, VIP ${spec.vips.join(",")}, ${spec.targets.length} targets\n`,
        );
        if (spec.mode !== "statistic") {
          process.stdout.write(
            `start the daemon: nflb lb --name ${spec.name} --queue ${opts.queue}${fragmentArgs(spec)}\n`,
          );
        }
      }),
    );

  addNameOption(
    program
      .command("teardown")
      .description("remove exactly the rules setup installed (the state stays: nflb delete)"),
  ).action(
    action(async (opts: { name: string }) => {
      requireRoot("nflb teardown");
      const { rules: removed } = await removeService(opts.name, { failAt: testFault() });
      process.stdout.write(
        removed
          ? `load balancer "${opts.name}" rules removed\n`
          : `nothing set up for "${opts.name}"\n`,
      );
    }),
  );
}
