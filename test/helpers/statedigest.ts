// The Maglev state as the tests compare it: settings, target slots and a digest of the
// table; not the generation, which every publication advances (also one that restores).
import { createHash } from "node:crypto";
import { deactivateTargets, openState, tryOpenState } from "../../src/state/store.js";

export function stateDigest(name: string): string | null {
  const state = tryOpenState(name);
  if (!state) return null;
  try {
    const snap = state.snapshot();
    const table = createHash("sha256")
      .update(new Uint8Array(snap.table.buffer, snap.table.byteOffset, snap.table.byteLength))
      .digest("hex");
    return JSON.stringify({ config: state.config, targets: snap.targets, table });
  } finally {
    state.close();
  }
}

/** As `nflb deactivate` does it. */
export function deactivate(name: string, fwmarks: number[]): void {
  const state = openState(name);
  try {
    state.update((targets) => deactivateTargets(targets, fwmarks));
  } finally {
    state.close();
  }
}
