// flow-set, flow-delete, flow-list, flow-list-names: which load balancer serves which
// traffic, when one daemon serves many services.
import type { Command } from "commander";
import { FlowError, parseFlow } from "../flows/index.js";
import { readFlows, updateFlows } from "../state/flowstore.js";
import { tryOpenState } from "../state/store.js";
import { action, CliError, printJson } from "./common.js";

interface FlowSetOptions {
  name: string;
  target: string;
  prio?: string;
  protocols?: string;
  dsts?: string;
  srcs?: string;
  dports?: string;
  sports?: string;
  match?: string;
  udpencap?: string;
}

export function registerFlowCommands(program: Command): void {
  program
    .command("flow-set")
    .description("define (or replace) a flow: matching traffic goes to load balancer TARGET")
    .requiredOption("--name <flow>", "flow name ([A-Za-z0-9_.-], up to 64)")
    .requiredOption("--target <lb>", "load balancer (state name) serving this traffic")
    .option("--prio <n>", "priority: the highest-priority matching flow wins (default 0)")
    .option("--protocols <list>", "tcp,udp,sctp (default: any protocol, hashed on addresses)")
    .option("--dsts <cidrs>", "destination CIDRs, comma-separated (default: any)")
    .option("--srcs <cidrs>", "source CIDRs, comma-separated (default: any)")
    .option("--dports <ranges>", 'destination ports, e.g. "80,443,8000-8100"')
    .option("--sports <ranges>", "source ports")
    .option(
      "--match <expr>",
      'L4 byte matches, e.g. "tcp[12:2] & 0x01ff = 0x0002", comma-separated',
    )
    .option("--udpencap <port>", "UDP port of SCTP over UDP for this flow")
    .action(
      action((opts: FlowSetOptions) => {
        const flow = parseFlow({
          name: opts.name,
          target: opts.target,
          priority: opts.prio,
          protocols: opts.protocols,
          dsts: opts.dsts,
          srcs: opts.srcs,
          dports: opts.dports,
          sports: opts.sports,
          match: opts.match,
          udpencap: opts.udpencap,
        });
        const target = tryOpenState(flow.target);
        if (!target) {
          throw new CliError(
            `flow ${flow.name}: no load balancer named "${flow.target}" (nflb init --name ${flow.target})`,
          );
        }
        target.close();
        updateFlows((flows) => [...flows.filter((f) => f.name !== flow.name), flow]);
        process.stdout.write(`flow ${flow.name} -> ${flow.target} (priority ${flow.priority})\n`);
      }),
    );

  program
    .command("flow-delete")
    .description("remove a flow")
    .requiredOption("--name <flow>", "flow name")
    .action(
      action((opts: { name: string }) => {
        updateFlows((flows) => {
          if (!flows.some((f) => f.name === opts.name))
            throw new FlowError(`no flow named "${opts.name}"`);
          return flows.filter((f) => f.name !== opts.name);
        });
        process.stdout.write(`flow ${opts.name} deleted\n`);
      }),
    );

  program
    .command("flow-list")
    .description("the flows as JSON, highest priority first")
    .option("--name <flow>", "only this flow")
    .action(
      action((opts: { name?: string }) => {
        const flows = readFlows();
        if (opts.name === undefined) {
          printJson(flows);
          return;
        }
        const flow = flows.find((f) => f.name === opts.name);
        if (!flow) throw new CliError(`no flow named "${opts.name}"`);
        printJson(flow);
      }),
    );

  program
    .command("flow-list-names")
    .description("the flow names, highest priority first")
    .action(
      action(() => {
        for (const f of readFlows()) process.stdout.write(`${f.name}\n`);
      }),
    );
}
