// The flows, off the packet threads: the daemon's main thread follows the flow files
// (a stat every FLOW_POLL_MS), compiles a change once and hands the compiled flows to
// every worker, whose arrays live in shared memory. A worker adopts them between two
// batches (in its message handler), so no packet thread ever compiles. A change that
// does not compile (or names a load balancer that does not exist) is not applied: the
// workers keep the flows they have, and the log and the flow-conf trace say why.
import { type CompiledFlows, compileFlows, sharedFlows } from "../flows/index.js";
import { type FlowSet, flowsVersion, readFlows } from "../state/flowstore.js";
import { tryOpenState } from "../state/store.js";

/** How often the main thread looks at the flow files (a stat each). */
export const FLOW_POLL_MS = 10;

/** Flows for the workers: null = none defined. */
export interface FlowsMessage {
  type: "flows";
  set: FlowSet;
  compiled: CompiledFlows | null;
}

export interface FlowFeedEvents {
  /** A compiled change, for every worker. */
  send(message: FlowsMessage): void;
  /** A change that could not be applied. */
  rejected(set: FlowSet, error: string): void;
}

export class FlowFeed {
  private readonly seen = new Map<FlowSet, string>();
  private readonly latest = new Map<FlowSet, FlowsMessage>();

  constructor(private readonly events: FlowFeedEvents) {}

  /**
   * Compiles the flow set now if its file changed since the last look; returns the flows
   * the workers should have (undefined when it did not change or was rejected).
   */
  refresh(set: FlowSet): FlowsMessage | undefined {
    const version = flowsVersion(set);
    if (this.seen.get(set) === version) return undefined;
    this.seen.set(set, version);
    let compiled: CompiledFlows | null;
    try {
      compiled = compile(set);
    } catch (err) {
      this.events.rejected(set, (err as Error).message);
      return undefined;
    }
    const message: FlowsMessage = { type: "flows", set, compiled };
    this.latest.set(set, message);
    this.events.send(message);
    return message;
  }

  /** The flows a worker started now should have (the last applied), null when none. */
  current(set: FlowSet): CompiledFlows | null {
    return this.latest.get(set)?.compiled ?? null;
  }
}

/** Reads and compiles a flow set; throws on a damaged file, bad flows or a missing target. */
function compile(set: FlowSet): CompiledFlows | null {
  const specs = readFlows(set);
  if (specs.length === 0) return null;
  const compiled = compileFlows(specs);
  if (set === "flows") {
    for (const target of new Set(compiled.flows.map((f) => f.target))) {
      const state = tryOpenState(target);
      if (state === undefined) throw new Error(`no load balancer named "${target}"`);
      state.close();
    }
  }
  return sharedFlows(compiled);
}
