#!/usr/bin/env node
// The nflb command line: each command group lives in its own file and registers itself.
import { readFileSync } from "node:fs";
import { Command } from "commander";
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
  .showHelpAfterError("(run with --help for usage)")
  .configureHelp({ sortSubcommands: false })
  // Commander's own usage errors look like nflb's: "nflb: <what is wrong>".
  .configureOutput({
    outputError: (text, write) => write(`nflb: ${text.replace(/^error: /, "")}`),
  });

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

await program.parseAsync(process.argv);
