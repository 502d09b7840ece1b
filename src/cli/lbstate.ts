// init, delete, activate, deactivate, show: the load balancer's shared state.
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import type { Command } from "commander";
import { readCounters } from "../dataplane/counters.js";
import { MAX_WEIGHT } from "../domain/weight.js";
import {
  DEFAULT_TABLE_SIZE,
  MAX_TABLE_SIZE,
  MIN_TABLE_SIZE,
  tableShares,
} from "../maglev/maglev.js";
import { countersPath } from "../paths.js";
import { type RepairSettings, repairState } from "../state/repair.js";
import {
  ALL_DOWN_POLICIES,
  type AllDownPolicy,
  activateTargets,
  DEFAULT_ALL_DOWN_POLICY,
  DEFAULT_MAX_TARGETS,
  deactivateTargets,
  decideTable,
  deleteState,
  initState,
  keepsConnections,
  MAX_MAX_TARGETS,
  openState,
  type StateFile,
  statePath,
  stateProblem,
  type TargetSlot,
} from "../state/store.js";
import {
  action,
  addNameOption,
  CliError,
  fwmarkArg,
  intArg,
  note,
  optionParser,
  printJson,
  warn,
  weightArg,
} from "./common.js";

const SHOWN_ENTRIES = 32;

export function describeState(state: StateFile) {
  const snap = state.snapshot();
  const shares = tableShares(snap.table);
  const { reasons, allDown } = decideTable(snap.targets, snap.allDownPolicy);
  return {
    name: state.name,
    path: state.path,
    M: state.config.tableSize,
    N: state.config.maxTargets,
    ownFwmark: state.config.ownFwmark,
    seed: state.config.hashSeed,
    sctpPortsOnly: state.config.sctpPortsOnly,
    sctpEncapPort: state.config.sctpEncapPort,
    allDownPolicy: snap.allDownPolicy,
    /** Health took every candidate target out: the all-down policy decides the table. */
    allDown,
    generation: snap.generation,
    targets: snap.targets
      .sort((a, b) => a.fwmark - b.fwmark)
      .map((t) => ({
        fwmark: t.fwmark,
        weight: t.weight,
        active: t.active,
        admin: t.admin,
        health: t.health,
        inTable: t.inTable,
        /** Why it is in or out of the table (serving, kept-last, inactive, disabled, drain, down). */
        reason: reasons.get(t.fwmark) ?? "inactive",
        keepsConnections: keepsConnections(t),
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
  const inTable = d.targets.filter((t) => t.inTable).length;
  const lines = [
    `load balancer "${d.name}" (${d.path})`,
    `  M=${d.M} N=${d.N} seed=${d.seed} own fwmark=${d.ownFwmark || "-"} generation=${d.generation}`,
    `  sctp: ${d.sctpPortsOnly ? "ports-only hash" : "5-tuple hash"}, udp encapsulation port ${d.sctpEncapPort || "off"}`,
    `  all targets down: ${d.allDownPolicy}${d.allDown ? " (applies now: every candidate is health-down)" : ""}`,
    `  targets: ${active} active of ${d.targets.length} known, ${inTable} in the table`,
  ];
  if (d.targets.length > 0) {
    lines.push("    fwmark      weight  active  admin     health   table         entries   share");
    for (const t of d.targets) {
      lines.push(
        `    ${String(t.fwmark).padEnd(10)}  ${String(t.weight).padStart(6)}  ${(t.active ? "yes" : "no").padEnd(6)}  ${t.admin.padEnd(8)}  ${t.health.padEnd(7)}  ${(t.inTable ? (t.reason === "kept-last" ? "in:kept" : "in") : `out:${t.reason}`).padEnd(12)}  ${String(t.entries).padStart(7)}  ${(t.share * 100).toFixed(2).padStart(6)}%`,
      );
    }
  }
  lines.push(`  table[0..${d.table.length - 1}]: ${d.table.map((f) => f || "-").join(" ")}`);
  lines.push(`  table sha256: ${d.tableDigest}`);
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** Publishes a change of a load balancer's targets and says which generation it made. */
export function changeTargets(
  name: string,
  change: (targets: TargetSlot[], maxTargets: number) => void,
): void {
  const state = openState(name);
  try {
    const snap = state.update((targets) => change(targets, state.config.maxTargets));
    const active = snap.targets.filter((t) => t.active).length;
    const inTable = snap.targets.filter((t) => t.inTable).length;
    process.stdout.write(
      `generation ${snap.generation}: ${active} active targets, ${inTable} in the table\n`,
    );
  } finally {
    state.close();
  }
}

export function collectFwmarks(values: string[]): number[] {
  if (values.length === 0) throw new CliError("give at least one FWMARK");
  return values.map((v) => fwmarkArg(v));
}

function parsePolicy(text: string): AllDownPolicy {
  if (!(ALL_DOWN_POLICIES as readonly string[]).includes(text)) {
    throw new Error(`expected ${ALL_DOWN_POLICIES.join(" or ")}`);
  }
  return text as AllDownPolicy;
}

/** Counters files of daemons that no longer run: they go with the state. */
function removeStoppedCounters(name: string): number {
  let removed = 0;
  for (const q of readCounters(name)) {
    if (q.running) continue;
    rmSync(countersPath(name, q.queue), { force: true });
    removed++;
  }
  return removed;
}

interface InitOpts {
  name: string;
  M: number;
  N: number;
  ownfw?: number;
  seed: number;
  sctpPortsOnly: boolean;
  sctpEncap: number;
  allDown?: AllDownPolicy;
  force?: boolean;
}

const INIT_DEFAULTS: RepairSettings = {
  tableSize: DEFAULT_TABLE_SIZE,
  maxTargets: DEFAULT_MAX_TARGETS,
  ownFwmark: 0,
  hashSeed: 0,
  sctpPortsOnly: true,
  sctpEncapPort: 0,
  allDownPolicy: DEFAULT_ALL_DOWN_POLICY,
};

/** init --force: rebuild (or re-set) the state, keeping every target still readable. */
function forceInit(opts: InitOpts, command: Command): void {
  const given: Partial<RepairSettings> = {};
  const fromCli = (key: string) => command.getOptionValueSource(key) === "cli";
  if (fromCli("M")) given.tableSize = opts.M;
  if (fromCli("N")) given.maxTargets = opts.N;
  if (fromCli("ownfw")) given.ownFwmark = opts.ownfw ?? 0;
  if (fromCli("seed")) given.hashSeed = opts.seed;
  if (fromCli("sctpPortsOnly")) given.sctpPortsOnly = opts.sctpPortsOnly;
  if (fromCli("sctpEncap")) given.sctpEncapPort = opts.sctpEncap;
  if (opts.allDown !== undefined) given.allDownPolicy = opts.allDown;
  const r = repairState(opts.name, given, INIT_DEFAULTS);
  if (r.message) note(r.message);
  if (r.created) {
    process.stdout.write(`created ${r.path}\n`);
    return;
  }
  if (r.unchanged) {
    process.stdout.write(`${r.path} is intact and has these settings: nothing to do\n`);
    return;
  }
  if (r.damage !== undefined) warn(`the state was damaged: ${r.damage}`);
  if (r.recovered) {
    const table = r.recovered.tableWasDamaged ? " (its table was damaged: rebuilt)" : "";
    process.stdout.write(
      `rebuilt ${r.path}: ${r.recovered.targets} targets from generation ${r.recovered.generation}${table}\n`,
    );
  } else {
    warn(
      "no readable copy of the targets: the state is rebuilt without targets, activate them again",
    );
    process.stdout.write(`rebuilt ${r.path} without targets (settings: ${r.settingsFrom})\n`);
  }
}

export function registerStateCommands(program: Command): void {
  addNameOption(
    program
      .command("init")
      .description(
        "create a load balancer's shared state (Maglev table of size M, up to N targets); --force rebuilds a damaged one",
      ),
  )
    .option(
      "--M <size>",
      `Maglev table size, a prime (${MIN_TABLE_SIZE}..${MAX_TABLE_SIZE}; another number becomes the prime below it)`,
      intArg(MIN_TABLE_SIZE, MAX_TABLE_SIZE, "Maglev table size"),
      DEFAULT_TABLE_SIZE,
    )
    .option(
      "--N <count>",
      `maximum number of targets (1..${MAX_MAX_TARGETS})`,
      intArg(1, MAX_MAX_TARGETS, "number of targets"),
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
    .option(
      "--all-down <policy>",
      "when health takes every target out: keep-last (keep those taken out last) or none (default keep-last)",
      optionParser(parsePolicy),
    )
    .option(
      "--force",
      "rebuild an existing (damaged) state from the targets still readable in it, or change its settings keeping the targets; settings not given are kept",
    )
    .action(
      action((opts: InitOpts, command: Command) => {
        if (opts.force) {
          forceInit(opts, command);
          return;
        }
        const result = initState({
          name: opts.name,
          tableSize: opts.M,
          maxTargets: opts.N,
          ownFwmark: opts.ownfw ?? 0,
          hashSeed: opts.seed,
          sctpPortsOnly: opts.sctpPortsOnly,
          sctpEncapPort: opts.sctpEncap,
          allDownPolicy: opts.allDown,
        });
        if (result.message) note(result.message);
        process.stdout.write(
          result.created
            ? `created ${result.path}\n`
            : `${result.path} already exists with these settings\n`,
        );
      }),
    );

  addNameOption(
    program
      .command("delete")
      .description(
        "remove a load balancer's shared state (also a damaged one) and its stopped daemons' counters",
      ),
  ).action(
    action((opts: { name: string }) => {
      const damage = stateProblem(opts.name);
      if (!deleteState(opts.name))
        throw new CliError(`no load balancer named "${opts.name}" (${statePath(opts.name)})`);
      if (damage !== undefined) warn(`the state was damaged (${damage}); removed anyway`);
      removeStoppedCounters(opts.name);
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
      .description(
        "M, N, targets with weights, admin state, health and table shares, the first table entries",
      ),
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
