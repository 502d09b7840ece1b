// `nflb fwmark`'s answer from the live configuration: the load balancer's table, the
// flows and the tier as a daemon would see them now, put through the daemon's own
// decide(). Reads the shared state and the flow file; changes nothing.
import {
  Decider,
  Decision,
  type DecisionReport,
  decideQuestion,
  describeDecision,
  type FlowRouting,
  type PacketQuestion,
} from "../decide/index.js";
import { FlowMatcher } from "../flows/index.js";
import { PacketInfo } from "../packet/info.js";
import { readFlows } from "../state/flowstore.js";
import { openState, type StateFile } from "../state/store.js";
import { LbView } from "./lbview.js";

export interface AskOptions {
  /** The load balancer whose daemon is asked (`nflb lb --name`). */
  name: string;
  /** The daemon's `--tier`. */
  tier?: string;
  /** The daemon's `--promiscuous-ping`. */
  promiscuousPing?: boolean;
  notargetsFwmark?: number;
  nolbFwmark?: number;
}

export interface FwmarkAnswer extends DecisionReport {
  /** Generation of the asked load balancer's table. */
  generation: number;
}

/** Where the daemon of `o.name` would send the packet of `q` now. Throws on bad input. */
export function askFwmark(q: PacketQuestion, o: AskOptions): FwmarkAnswer {
  const opened: StateFile[] = [];
  const open = (name: string): LbView => {
    const state = openState(name);
    opened.push(state);
    state.snapshot(); // a damaged state is an error, not "no target"
    const view = new LbView(state);
    view.refresh();
    return view;
  };
  try {
    const own = open(o.name);
    const config = opened[0].config;
    const decider = new Decider(own, o.name, {
      notargetsFwmark: o.notargetsFwmark ?? 0,
      nolbFwmark: o.nolbFwmark ?? 0,
      acceptInvalid: false,
    });
    decider.ownFwmark = config.ownFwmark;
    if (o.tier !== undefined) decider.tier = open(o.tier);
    decider.flows = flowRouting(o, own, open);
    const info = new PacketInfo();
    const d = new Decision();
    const options = { sctpPortsOnly: config.sctpPortsOnly, sctpEncapPort: config.sctpEncapPort };
    decideQuestion(decider, q, options, info, d);
    return { ...describeDecision(d, info, decider.flows), generation: own.generation };
  } finally {
    for (const state of opened) state.close();
  }
}

/** The stored flows with their load balancers' tables, or undefined when there are none. */
function flowRouting(
  o: AskOptions,
  own: LbView,
  open: (name: string) => LbView,
): FlowRouting | undefined {
  const specs = readFlows();
  if (specs.length === 0) return undefined;
  const matcher = new FlowMatcher(specs, { promiscuousPing: o.promiscuousPing === true });
  const views = new Map<string, LbView>([[o.name, own]]);
  const lbNames = matcher.flows.map((f) => f.target);
  const lbs = lbNames.map((name) => {
    let v = views.get(name);
    if (v === undefined) {
      v = open(name);
      views.set(name, v);
    }
    return v;
  });
  return { matcher, lbs, lbNames };
}
