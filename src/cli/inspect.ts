// fwmark and stats: what the load balancer decides and what it has done.
import type { Command } from "commander";
import { readCounters } from "../dataplane/counters.js";
import { LbView, NO_SLOT } from "../dataplane/lbview.js";
import { parseEndpoint } from "../domain/endpoint.js";
import { readCounters as readRuleCounters, readSetupRecord } from "../netfilter/index.js";
import { readQueueProcStats } from "../nfqueue/procstats.js";
import { flowHash, formatInfo, infoFromTuple, PacketInfo, protoNumber } from "../packet/index.js";
import { openState, stateProblem, tryOpenState } from "../state/store.js";
import { action, addNameOption, CliError, printJson, warn } from "./common.js";

export function registerInspectCommands(program: Command): void {
  addNameOption(
    program
      .command("fwmark")
      .description("which target a flow maps to now (the daemon's own code path)"),
  )
    .requiredOption("--src <addr:port>", "source address and port ([v6]:port for IPv6)")
    .requiredOption("--dst <addr:port>", "destination address and port")
    .option("--proto <proto>", "protocol: tcp, udp, sctp, icmp, icmpv6 or a number", "tcp")
    .option("--json", "machine-readable output")
    .action(
      action((opts: { name: string; src: string; dst: string; proto: string; json?: boolean }) => {
        const proto = protoNumber(opts.proto);
        const src = parseEndpoint(opts.src);
        const dst = parseEndpoint(opts.dst);
        if (src.family !== dst.family) {
          throw new CliError("source and destination must be of the same address family");
        }
        const state = openState(opts.name);
        try {
          state.snapshot(); // a damaged state is an error, not "no target"
          const view = new LbView(state);
          view.refresh();
          const info = new PacketInfo();
          infoFromTuple(
            proto,
            src.address,
            src.port,
            dst.address,
            dst.port,
            {
              sctpPortsOnly: state.config.sctpPortsOnly,
              sctpEncapPort: state.config.sctpEncapPort,
            },
            info,
          );
          const hash = flowHash(info, view.hashSeed);
          const slot = view.slotFor(hash);
          const fwmark = slot === NO_SLOT ? null : view.fwmarkBySlot[slot];
          if (opts.json) {
            printJson({ fwmark, hash, flow: formatInfo(info), generation: view.generation });
          } else {
            process.stdout.write(`${fwmark ?? "none (no active target)"}\n`);
          }
        } finally {
          state.close();
        }
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
        const queues = readCounters(opts.name);
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
        const record = readSetupRecord(opts.name);
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
        if (queues.length === 0)
          out.push("no daemon counters (nflb lb has not run for this load balancer)");
        for (const q of queues) {
          out.push(
            `queue ${q.queue}: ${q.running ? `running (pid ${q.pid})` : "stopped"}, packets ${q.packets}, batches ${q.batches}, marked ${q.marked}`,
            `  no target: dropped ${q.noTargetDropped}, marked ${q.noTargetMarked}; invalid: dropped ${q.invalidDropped}, accepted ${q.invalidAccepted}; send errors ${q.sendErrors}`,
          );
          if (q.stateDamage > 0) out.push(`  state damage found ${q.stateDamage} times`);
        }
        for (const q of queues) {
          const fr = q.fragments;
          if (fr.firstSeen + fr.forwarded + fr.stored + fr.truncated === 0) continue;
          out.push(
            `queue ${q.queue} fragments: first ${fr.firstSeen}, forwarded ${fr.forwarded}, held ${fr.stored}, re-injected ${fr.reinjected}, entries now ${fr.entries}, held now ${fr.held}`,
            `  dropped: expired ${fr.droppedExpired}, pool full ${fr.droppedPoolFull}, too big ${fr.droppedTooBig}, table full ${fr.droppedTableFull}, poisoned ${fr.droppedPoisoned}, truncated copy ${fr.truncated}; expired entries ${fr.expiredEntries}`,
          );
        }
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
