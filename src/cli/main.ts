#!/usr/bin/env node
// The nflb command line: each command group lives in its own file and registers itself.
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { CliError, fail } from "./common.js";
import { registerDashboardCommands } from "./dashboard.js";
import { registerFlowCommands } from "./flows.js";
import { registerInspectCommands } from "./inspect.js";
import { registerLbCommand } from "./lb.js";
import { registerStateCommands } from "./lbstate.js";
import { registerSetupCommands } from "./setup.js";
import { registerTargetCommands } from "./target.js";
import { registerTraceCommands } from "./trace.js";

const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
  version: string;
};

const program = new Command("nflb")
  .description(
    "Linux L3/L4 load balancer on netfilter: NFQUEUE + Maglev, NAT, DSR and statistic modes",
  )
  .version(pkg.version, "-V, --version")
  .configureHelp({ sortSubcommands: false })
  // Commander's usage errors are thrown (exitOverride, inherited by every command) and
  // printed by fail(), like every other error: one line "nflb: <what is wrong>".
  .exitOverride()
  .configureOutput({ outputError: () => {} });

program
  .command("version")
  .description("print the nflb version")
  .action(() => {
    process.stdout.write(`nflb ${pkg.version}\n`);
  });

registerStateCommands(program);
registerTargetCommands(program);
registerLbCommand(program);
registerInspectCommands(program);
registerSetupCommands(program);
registerFlowCommands(program);
registerTraceCommands(program);
registerDashboardCommands(program);

// An unknown command is an error, also with --help (commander would print the parent's
// help and exit 0): the words before the first option must name commands.
function unknownCommand(command: Command, words: readonly string[]): string | undefined {
  let current = command;
  let helpFor = false;
  for (const word of words) {
    if (word.startsWith("-") || current.commands.length === 0) return undefined;
    if (word === "help" && !helpFor) {
      helpFor = true;
      continue;
    }
    const sub = current.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) return word;
    current = sub;
  }
  return undefined;
}
const unknown = unknownCommand(program, process.argv.slice(2));
if (unknown !== undefined) {
  fail(new CliError(`unknown command '${unknown}' (nflb --help lists the commands)`));
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Help and version were printed already: --help exits 0, a bare `nflb` (help on stderr) 1.
  const shown = ["commander.help", "commander.helpDisplayed", "commander.version"];
  if (err instanceof CommanderError && shown.includes(err.code)) process.exit(err.exitCode);
  fail(err);
}
