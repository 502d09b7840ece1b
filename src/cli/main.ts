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
registerLbCommand(program);
registerInspectCommands(program);
registerSetupCommands(program);
registerFlowCommands(program);
registerTraceCommands(program);
registerDashboardCommands(program);

// An unknown command is an error, also with --help (commander would print the top-level
// help and exit 0).
const commandNames = new Set([
  "help",
  ...program.commands.flatMap((c) => [c.name(), ...c.aliases()]),
]);
const [first, second] = process.argv.slice(2);
for (const word of first === "help" ? [second] : [first]) {
  if (word !== undefined && !word.startsWith("-") && !commandNames.has(word)) {
    fail(new CliError(`unknown command '${word}' (nflb --help lists the commands)`));
  }
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Help and version were printed already: --help exits 0, a bare `nflb` (help on stderr) 1.
  const shown = ["commander.help", "commander.helpDisplayed", "commander.version"];
  if (err instanceof CommanderError && shown.includes(err.code)) process.exit(err.exitCode);
  fail(err);
}
