// fwmark and stats: what the load balancer decides and what it has done.
import type { Command } from "commander";
import { askFwmark } from "../dataplane/ask.js";
import { type QueueCounters, readCounters } from "../dataplane/counters.js";
import { explainDecision, type PacketQuestion } from "../decide/index.js";
import { parseEndpoint } from "../domain/endpoint.js";
import {
  readCounters as readRuleCounters,
  readSetupRecord,
  type SetupSpec,
} from "../netfilter/index.js";
import { readQueueProcStats } from "../nfqueue/procstats.js";
import { invalidReasonNames, protoNumber } from "../packet/index.js";
import { stateProblem, tryOpenState } from "../state/store.js";
import { action, addNameOption, CliError, fwmarkArg, printJson, warn } from "./common.js";

/** Why a packet gets no mark, as the plain answer says it. */
const NONE_WHY: Record<string, string> = {
  "no-target": "no active target",
  "no-flow": "no flow matches",
  "fragment-held": "held",
  "fragment-dropped": "dropped",
};

interface FwmarkOptions {
  name: string;
  src: string;
  dst: string;
  proto: string;
  fragment?: string;
  tier?: string;
  promiscuousPing?: boolean;
  notargetsFwmark?: number;
  nolbFwmark?: number;
  explain?: boolean;
  json?: boolean;
}

export function registerInspectCommands(program: Command): void {
  addNameOption(
    program
      .command("fwmark")
      .description(
        "which target a packet goes to now: the daemon's own decision (flows, load balancer, hash, tier, fragments)",
      ),
  )
    .requiredOption("--src <addr:port>", "source address and port ([v6]:port for IPv6)")
    .requiredOption("--dst <addr:port>", "destination address and port")
    .option(
      "--proto <proto>",
      "protocol: tcp, udp, sctp, icmp, icmpv6 (asked as an echo request) or a number",
      "tcp",
    )
    .option(
      "--fragment <which>",
      "ask for a fragment of this flow's datagram: first or later (as the fragment queue decides)",
    )
    .option("--tier <name>", "the daemon's --tier: fragments go to the instance owning them")
    .option("--promiscuous-ping", "the daemon's --promiscuous-ping")
    .option("--notargets-fwmark <fwmark>", "the daemon's --notargets-fwmark", fwmarkArg)
    .option("--nolb-fwmark <fwmark>", "the daemon's --nolb-fwmark", fwmarkArg)
    .option("--explain", "say which path decided: flow, load balancer, hash, slot, reason")
    .option("--json", "machine-readable output (every field of the decision)")
    .action(
      action((opts: FwmarkOptions) => {
        const src = parseEndpoint(opts.src);
        const dst = parseEndpoint(opts.dst);
        if (src.family !== dst.family) {
          throw new CliError("source and destination must be of the same address family");
        }
        if (opts.fragment !== undefined && opts.fragment !== "first" && opts.fragment !== "later") {
          throw new CliError(`invalid --fragment "${opts.fragment}": expected first or later`);
        }
        let proto: number;
        try {
          proto = protoNumber(opts.proto);
        } catch (err) {
          throw new CliError((err as Error).message);
        }
        const answer = askFwmark(
          {
            proto,
            src: src.address,
            sport: src.port,
            dst: dst.address,
            dport: dst.port,
            fragment: opts.fragment as PacketQuestion["fragment"],
          },
          {
            name: opts.name,
            tier: opts.tier,
            promiscuousPing: opts.promiscuousPing === true,
            notargetsFwmark: opts.notargetsFwmark,
            nolbFwmark: opts.nolbFwmark,
          },
        );
        if (opts.json) printJson(answer);
        else if (opts.explain) process.stdout.write(`${explainDecision(answer)}\n`);
        else
          process.stdout.write(
            `${answer.fwmark ?? `none (${NONE_WHY[answer.reason] ?? answer.reason})`}\n`,
          );
      }),
    );

  addNameOption(
    program
      .command("stats")
      .description("daemon counters per queue and target, the kernel's queue counters"),
  )
    .option("--json", "machine-readable output")
    .action(
      action((opts: { name: string; json?: boolean }) => {
        const record = readSetupRecord(opts.name);
        const queues = currentQueues(readCounters(opts.name), record);
        // Statistic mode has rules but no Maglev state: counters come from the rules then.
        // A damaged state: the counters are still shown, without per-target totals.
        const damage = stateProblem(opts.name);
        if (damage !== undefined) warn(`the state is damaged (${damage}): no per-target totals`);
        const state = damage === undefined ? tryOpenState(opts.name) : undefined;
        let fwmarkBySlot = new Map<number, number>();
        if (state) {
          try {
            fwmarkBySlot = new Map(state.snapshot().targets.map((t) => [t.slot, t.fwmark]));
          } finally {
            state.close();
          }
        }
        const perTarget = new Map<number, number>();
        for (const q of queues) {
          q.perSlot.forEach((packets, slot) => {
            const fwmark = fwmarkBySlot.get(slot);
            if (fwmark !== undefined) perTarget.set(fwmark, (perTarget.get(fwmark) ?? 0) + packets);
          });
        }
        if (!state && damage === undefined && !record && queues.length === 0) {
          throw new CliError(
            `no load balancer named "${opts.name}": nothing set up, no state, no daemon counters`,
          );
        }
        let kernel: ReturnType<typeof readQueueProcStats> = [];
        try {
          kernel = readQueueProcStats();
        } catch {
          // Only root may read /proc/net/netfilter/nfnetlink_queue; the rest still helps.
        }
        const rules = record ? readRuleCounters(opts.name) : undefined;
        const result = {
          name: opts.name,
          queues: queues.map(({ perSlot: _, ...q }) => q),
          targets: [...perTarget].map(([fwmark, packets]) => ({ fwmark, packets })),
          kernelQueues: kernel,
          rules,
        };
        if (opts.json) {
          printJson(result);
          return;
        }
        const out: string[] = [];
        if (queues.length === 0) {
          out.push(
            record?.mode === "statistic"
              ? "no daemon counters (statistic mode: the kernel balances, see the rules below)"
              : "no daemon counters (nflb lb has not run for this load balancer)",
          );
        }
        for (const q of queues) out.push(...queueLines(q));
        if (perTarget.size > 0) {
          out.push("targets:");
          for (const [fwmark, packets] of perTarget)
            out.push(`  fwmark ${fwmark}: ${packets} packets`);
        }
        for (const k of kernel) {
          out.push(
            `kernel queue ${k.queue}: waiting ${k.queueTotal}, queue dropped ${k.queueDropped}, user dropped ${k.userDropped}`,
          );
        }
        if (rules) {
          out.push(`rules: queued ${rules.queued.packets} packets`);
          if (rules.icmp) out.push(`  of which ICMP: ${rules.icmp.packets} packets`);
          if (rules.fragments) out.push(`  fragments queued: ${rules.fragments.packets} packets`);
          for (const p of rules.peers ?? []) {
            out.push(
              `  tier peer fwmark ${p.fwmark} -> ${p.address}: ${p.packets} fragments handed over`,
            );
          }
          for (const t of rules.targets) {
            out.push(
              `  fwmark ${t.fwmark} -> ${t.address}: ${t.packets} packets, ${t.bytes} bytes`,
            );
          }
        }
        process.stdout.write(`${out.join("\n")}\n`);
      }),
    );
}

/**
 * The queues worth showing: every running one, and stopped ones (their last counters)
 * only if the current setup still sends packets to them; with no setup record, all.
 * A statistic-mode setup has no queue, so an earlier daemon's counters are not shown.
 */
export function currentQueues(
  queues: QueueCounters[],
  record: SetupSpec | undefined,
): QueueCounters[] {
  if (record === undefined) return queues;
  const served = (q: number) =>
    record.mode !== "statistic" &&
    ((q >= record.queue.first && q <= record.queue.last) || q === record.fragments?.queue);
  return queues.filter((q) => q.running || served(q.queue));
}

/** A queue's counters as text: what it did, and its fragment table when it has one. */
export function queueLines(q: QueueCounters): string[] {
  const out = [
    `queue ${q.queue}: ${q.running ? `running (pid ${q.pid})` : "stopped"}, packets ${q.packets}, batches ${q.batches}, marked ${q.marked}`,
    `  no target: dropped ${q.noTargetDropped}, marked ${q.noTargetMarked}; invalid: dropped ${q.invalidDropped}, accepted ${q.invalidAccepted}; send errors ${q.sendErrors}`,
  ];
  const why = Object.entries(q.invalidByReason)
    .map(([r, n]) => `${invalidReasonNames[Number(r)] ?? r} ${n}`)
    .join(", ");
  if (why !== "") out.push(`  invalid by reason: ${why}`);
  if (q.flows + q.noFlowDropped + q.noFlowMarked > 0) {
    out.push(`  flows ${q.flows}; no flow: dropped ${q.noFlowDropped}, marked ${q.noFlowMarked}`);
  }
  if (q.tierForwarded > 0) out.push(`  handed to tier peers: ${q.tierForwarded}`);
  if (q.stateDamage > 0) out.push(`  state damage found ${q.stateDamage} times`);
  const fr = q.fragments;
  if (Object.values(fr).some((n) => n > 0)) {
    out.push(
      `  fragments: first ${fr.firstSeen} (duplicate ${fr.firstDuplicate}), later ${fr.laterSeen}: forwarded ${fr.forwarded}, held ${fr.stored}, re-injected ${fr.reinjected} (errors ${fr.reinjectErrors}); entries now ${fr.entries}, held now ${fr.held}`,
      `  fragments dropped: expired ${fr.droppedExpired}, pool full ${fr.droppedPoolFull}, too big ${fr.droppedTooBig}, table full ${fr.droppedTableFull}, poisoned ${fr.droppedPoisoned}, truncated copy ${fr.truncated}; datagrams poisoned ${fr.poisoned} (held copies discarded ${fr.discardedPoisoned}); expired entries ${fr.expiredEntries}`,
    );
  }
  return out;
}
