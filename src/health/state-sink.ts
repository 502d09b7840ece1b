// The sink `nflb run` uses: health goes into each load balancer's shared state file through
// the same API as `nflb target` (StateFile.update + setHealth), so both data planes follow.
// One publish is one update: the changes of one moment share one generation (and, for the
// all-down policy, one downSeq). The admin state is never touched: setHealth leaves it be.
import { openState, StateError, type StateFile, setHealth } from "../state/store.js";
import type { HealthSink, TargetHealthChange } from "./sink.js";

/** Some targets' health could not be written: the state does not have them (yet). */
export class MissingTargetsError extends StateError {
  override name = "MissingTargetsError";
  constructor(
    readonly stateName: string,
    readonly fwmarks: number[],
  ) {
    super(
      `load balancer "${stateName}" has no target ${fwmarks.join(", ")}: its health is kept until it has`,
    );
  }
}

export interface StateHealthSinkOptions {
  /** The load balancer (state file) of a service; the service's own name by default. */
  stateName?: (service: string) => string;
  /** Opens a state file; openState by default. */
  open?: (name: string) => StateFile;
}

/**
 * Records health in one state file. Changes the state already holds are skipped (a
 * restart's warm-up mostly confirms what was there: no needless generation). Targets the
 * state does not have are left out of the update and named in a MissingTargetsError thrown after
 * it, so the checker keeps their health and tries again once the configuration added them.
 * Returns the generation written, or undefined if nothing needed writing.
 */
export function recordHealth(
  state: StateFile,
  changes: readonly TargetHealthChange[],
): number | undefined {
  const held = new Map(state.snapshot().targets.map((t) => [t.fwmark, t.health]));
  const missing = changes.filter((c) => !held.has(c.fwmark)).map((c) => c.fwmark);
  const needed = changes.filter((c) => held.has(c.fwmark) && held.get(c.fwmark) !== c.health);
  let generation: number | undefined;
  if (needed.length > 0) {
    generation = state.update((targets) => {
      // Under the lock: a target removed since the read above is left out, not an error.
      const present = new Set(targets.map((t) => t.fwmark));
      setHealth(
        targets,
        needed.filter((c) => present.has(c.fwmark)),
      );
    }).generation;
  }
  if (missing.length > 0) {
    throw new MissingTargetsError(state.name, missing);
  }
  return generation;
}

export class StateHealthSink implements HealthSink {
  private readonly files = new Map<string, StateFile>();
  private readonly stateName: (service: string) => string;
  private readonly open: (name: string) => StateFile;

  constructor(options: StateHealthSinkOptions = {}) {
    this.stateName = options.stateName ?? ((service) => service);
    this.open = options.open ?? openState;
  }

  publish(service: string, changes: readonly TargetHealthChange[]): void {
    const name = this.stateName(service);
    const state = this.files.get(name) ?? this.open(name);
    this.files.set(name, state);
    try {
      recordHealth(state, changes);
    } catch (err) {
      // A replaced (re-initialised, repaired) or damaged file is opened afresh next time.
      if (!(err instanceof MissingTargetsError)) {
        state.close();
        this.files.delete(name);
      }
      throw err;
    }
  }

  close(): void {
    for (const state of this.files.values()) state.close();
    this.files.clear();
  }
}
