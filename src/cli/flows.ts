// flow-set/-delete/-list/-list-names (which load balancer serves which traffic, when one
// daemon serves many services) and trace-flow-* (which packets the packet trace prints):
// the same commands over two flow sets.
import type { Command } from "commander";
import { FlowError, type FlowSpec, parseFlow } from "../flows/index.js";
import { type FlowSet, readFlows, updateFlows } from "../state/flowstore.js";
import { tryOpenState } from "../state/store.js";
import { action, CliError, printJson } from "./common.js";

/** Trace flows reuse the flow syntax; their load balancer is this placeholder. */
export const TRACE_FLOW_TARGET = "trace";

interface FlowSetOptions {
  name: string;
  target?: string;
  prio?: string;
  protocols?: string;
  dsts?: string;
  srcs?: string;
  dports?: string;
  sports?: string;
  match?: string;
  udpencap?: string;
}

interface FlowCommands {
  /** Command prefix: "flow" or "trace-flow". */
  prefix: string;
  set: FlowSet;
  /** "flow" or "trace flow", in messages. */
  noun: string;
  /** What a flow of this set does, for flow-set's description. */
  purpose: string;
  /** Flows of this set name a load balancer (--target); trace flows do not. */
  targeted: boolean;
}

const FLOWS: FlowCommands = {
  prefix: "flow",
  set: "flows",
  noun: "flow",
  purpose: "matching traffic goes to load balancer TARGET",
  targeted: true,
};

const TRACE_FLOWS: FlowCommands = {
  prefix: "trace-flow",
  set: "trace-flows",
  noun: "trace flow",
  purpose: "the packet trace prints the packets matching any trace flow",
  targeted: false,
};

/** A flow as the user sees it: trace flows without their placeholder target. */
function shown(kind: FlowCommands, flow: FlowSpec): FlowSpec | Omit<FlowSpec, "target"> {
  if (kind.targeted) return flow;
  const { target: _, ...rest } = flow;
  return rest;
}

function registerFlowSet(program: Command, kind: FlowCommands): void {
  const set = program
    .command(`${kind.prefix}-set`)
    .description(`define (or replace) a ${kind.noun}: ${kind.purpose}`)
    .requiredOption("--name <flow>", `${kind.noun} name ([A-Za-z0-9_.-], up to 64)`);
  if (kind.targeted) {
    set.requiredOption("--target <lb>", "load balancer (state name) serving this traffic");
  }
  set
    .option("--prio <n>", "priority: the highest-priority matching flow wins (default 0)")
    .option(
      "--protocols <list>",
      `tcp,udp,sctp (default: any protocol${kind.targeted ? ", hashed on addresses" : ""})`,
    )
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
          target: opts.target ?? TRACE_FLOW_TARGET,
          priority: opts.prio,
          protocols: opts.protocols,
          dsts: opts.dsts,
          srcs: opts.srcs,
          dports: opts.dports,
          sports: opts.sports,
          match: opts.match,
          udpencap: opts.udpencap,
        });
        if (kind.targeted) {
          const target = tryOpenState(flow.target);
          if (!target) {
            throw new CliError(
              `flow ${flow.name}: no load balancer named "${flow.target}" (nflb init --name ${flow.target})`,
            );
          }
          target.close();
        }
        updateFlows((flows) => [...flows.filter((f) => f.name !== flow.name), flow], kind.set);
        const to = kind.targeted ? ` -> ${flow.target}` : "";
        process.stdout.write(`${kind.noun} ${flow.name}${to} (priority ${flow.priority})\n`);
      }),
    );

  program
    .command(`${kind.prefix}-delete`)
    .description(`remove a ${kind.noun}`)
    .requiredOption("--name <flow>", `${kind.noun} name`)
    .action(
      action((opts: { name: string }) => {
        updateFlows((flows) => {
          if (!flows.some((f) => f.name === opts.name)) {
            throw new FlowError(`no ${kind.noun} named "${opts.name}"`);
          }
          return flows.filter((f) => f.name !== opts.name);
        }, kind.set);
        process.stdout.write(`${kind.noun} ${opts.name} deleted\n`);
      }),
    );

  program
    .command(`${kind.prefix}-list`)
    .description(`the ${kind.noun}s as JSON, highest priority first`)
    .option("--name <flow>", `only this ${kind.noun}`)
    .action(
      action((opts: { name?: string }) => {
        const flows = readFlows(kind.set);
        if (opts.name === undefined) {
          printJson(flows.map((f) => shown(kind, f)));
          return;
        }
        const flow = flows.find((f) => f.name === opts.name);
        if (!flow) throw new CliError(`no ${kind.noun} named "${opts.name}"`);
        printJson(shown(kind, flow));
      }),
    );

  program
    .command(`${kind.prefix}-list-names`)
    .description(`the ${kind.noun} names, highest priority first`)
    .action(
      action(() => {
        for (const f of readFlows(kind.set)) process.stdout.write(`${f.name}\n`);
      }),
    );
}

export function registerFlowCommands(program: Command): void {
  registerFlowSet(program, FLOWS);
}

export function registerTraceFlowCommands(program: Command): void {
  registerFlowSet(program, TRACE_FLOWS);
}
