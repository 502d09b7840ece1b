// init, delete, activate, deactivate, show: the load balancer's shared state.
import { createHash } from "node:crypto";
import type { Command } from "commander";
import { removeCounters } from "../dataplane/counters.js";
import { MAX_WEIGHT } from "../domain/weight.js";
import { DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, tableShares } from "../maglev/maglev.js";
import {
  activateTargets,
  DEFAULT_MAX_TARGETS,
  deactivateTargets,
  deleteState,
  initState,
  MAX_MAX_TARGETS,
  openState,
  type StateFile,
  statePath,
  type TargetSlot,
} from "../state/store.js";
import {
  action,
  addNameOption,
  CliError,
  fwmarkArg,
  intArg,
  note,
  printJson,
  weightArg,
} from "./common.js";

const SHOWN_ENTRIES = 32;

export function describeState(state: StateFile) {
  const snap = state.snapshot();
  const shares = tableShares(snap.table);
  return {
    name: state.name,
    path: state.path,
    M: state.config.tableSize,
    N: state.config.maxTargets,
    ownFwmark: state.config.ownFwmark,
    seed: state.config.hashSeed,
    sctpPortsOnly: state.config.sctpPortsOnly,
    sctpEncapPort: state.config.sctpEncapPort,
    generation: snap.generation,
    targets: snap.targets
      .sort((a, b) => a.fwmark - b.fwmark)
      .map((t) => ({
        fwmark: t.fwmark,
        weight: t.weight,
        active: t.active,
        entries: shares.get(t.fwmark) ?? 0,
        share: (shares.get(t.fwmark) ?? 0) / snap.table.length,
      })),
    tableDigest: createHash("sha256")
      .update(new Uint8Array(snap.table.buffer, snap.table.byteOffset, snap.table.byteLength))
      .digest("hex"),
    table: Array.from(snap.table.subarray(0, SHOWN_ENTRIES)),
  };
}

function printState(d: ReturnType<typeof describeState>): void {
  const active = d.targets.filter((t) => t.active).length;
  const lines = [
    `load balancer "${d.name}" (${d.path})`,
    `  M=${d.M} N=${d.N} seed=${d.seed} own fwmark=${d.ownFwmark || "-"} generation=${d.generation}`,
    `  sctp: ${d.sctpPortsOnly ? "ports-only hash" : "5-tuple hash"}, udp encapsulation port ${d.sctpEncapPort || "off"}`,
    `  targets: ${active} active of ${d.targets.length} known`,
  ];
  if (d.targets.length > 0) {
    lines.push("    fwmark      weight  active  entries   share");
    for (const t of d.targets) {
      lines.push(
        `    ${String(t.fwmark).padEnd(10)}  ${String(t.weight).padStart(6)}  ${(t.active ? "yes" : "no").padEnd(6)}  ${String(t.entries).padStart(7)}  ${(t.share * 100).toFixed(2).padStart(6)}%`,
      );
    }
  }
  lines.push(`  table[0..${d.table.length - 1}]: ${d.table.map((f) => f || "-").join(" ")}`);
  lines.push(`  table sha256: ${d.tableDigest}`);
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** Publishes a change of a load balancer's targets and says which generation it made. */
function changeTargets(
  name: string,
  change: (targets: TargetSlot[], maxTargets: number) => void,
): void {
  const state = openState(name);
  try {
    const snap = state.update((targets) => change(targets, state.config.maxTargets));
    const active = snap.targets.filter((t) => t.active).length;
    process.stdout.write(`generation ${snap.generation}: ${active} active targets\n`);
  } finally {
    state.close();
  }
}

function collectFwmarks(values: string[]): number[] {
  if (values.length === 0) throw new CliError("give at least one FWMARK");
  return values.map((v) => fwmarkArg(v));
}

export function registerStateCommands(program: Command): void {
  addNameOption(
    program
      .command("init")
      .description(
        "create a load balancer's shared state (Maglev table of size M, up to N targets)",
      ),
  )
    .option(
      "--M <size>",
      `Maglev table size, a prime (3..${MAX_TABLE_SIZE})`,
      intArg(0, 0x7fffffff),
      DEFAULT_TABLE_SIZE,
    )
    .option(
      "--N <count>",
      `maximum number of targets (1..${MAX_MAX_TARGETS})`,
      intArg(0, 0x7fffffff),
      DEFAULT_MAX_TARGETS,
    )
    .option("--ownfw <fwmark>", "this instance's own fwmark in a load-balancer tier", fwmarkArg)
    .option(
      "--seed <seed>",
      "32-bit jhash seed (instances must share it)",
      intArg(0, 0xffffffff),
      0,
    )
    .option("--no-sctp-ports-only", "hash SCTP on the 5-tuple instead of ports only")
    .option(
      "--sctp-encap <port>",
      "UDP port of SCTP-over-UDP encapsulation (0 = off)",
      intArg(0, 65535),
      0,
    )
    .action(
      action(
        (opts: {
          name: string;
          M: number;
          N: number;
          ownfw?: number;
          seed: number;
          sctpPortsOnly: boolean;
          sctpEncap: number;
        }) => {
          const result = initState({
            name: opts.name,
            tableSize: opts.M,
            maxTargets: opts.N,
            ownFwmark: opts.ownfw ?? 0,
            hashSeed: opts.seed,
            sctpPortsOnly: opts.sctpPortsOnly,
            sctpEncapPort: opts.sctpEncap,
          });
          if (result.message) note(result.message);
          process.stdout.write(
            result.created
              ? `created ${result.path}\n`
              : `${result.path} already exists with these settings\n`,
          );
        },
      ),
    );

  addNameOption(
    program.command("delete").description("remove a load balancer's shared state"),
  ).action(
    action((opts: { name: string }) => {
      if (!deleteState(opts.name))
        throw new CliError(`no load balancer named "${opts.name}" (${statePath(opts.name)})`);
      removeCounters(opts.name); // the last counters of its stopped queues go with it
      process.stdout.write(`deleted ${statePath(opts.name)}\n`);
    }),
  );

  addNameOption(
    program
      .command("activate")
      .description("add targets (or change their weight); the daemon follows at its next batch")
      .argument("<fwmark...>", "targets, each named by its fwmark (1..4294967295)"),
  )
    .option("--weight <w>", `weight of these targets (1..${MAX_WEIGHT})`, weightArg(), 1)
    .action(
      action((fwmarks: string[], opts: { name: string; weight: number }) => {
        const marks = collectFwmarks(fwmarks);
        changeTargets(opts.name, (targets, maxTargets) =>
          activateTargets(targets, marks, opts.weight, maxTargets),
        );
      }),
    );

  addNameOption(
    program
      .command("deactivate")
      .description("take targets out of the table; their flows move, others stay")
      .argument("<fwmark...>", "targets to deactivate"),
  ).action(
    action((fwmarks: string[], opts: { name: string }) => {
      const marks = collectFwmarks(fwmarks);
      changeTargets(opts.name, (targets) => deactivateTargets(targets, marks));
    }),
  );

  addNameOption(
    program
      .command("show")
      .description("M, N, targets with weights and table shares, the first table entries"),
  )
    .option("--json", "machine-readable output")
    .action(
      action((opts: { name: string; json?: boolean }) => {
        const state = openState(opts.name);
        try {
          const d = describeState(state);
          if (opts.json) printJson(d);
          else printState(d);
        } finally {
          state.close();
        }
      }),
    );
}
