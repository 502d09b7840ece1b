// nflb target enable|disable|drain: the operator's word on targets. It lives in the
// shared state (it survives restarts of the daemon and the service), health checks never
// override it, and the table rules are those of src/state/targets.ts.
import type { Command } from "commander";
import { type AdminState, setAdmin } from "../state/store.js";
import { action, addNameOption } from "./common.js";
import { changeTargets, collectFwmarks } from "./lbstate.js";

const VERBS: readonly { verb: string; admin: AdminState; description: string }[] = [
  {
    verb: "enable",
    admin: "enabled",
    description: "put targets back: in the table again when they are active and not health-down",
  },
  {
    verb: "disable",
    admin: "disabled",
    description:
      "take targets out of the table: their flows move to the others, their connections are not kept",
  },
  {
    verb: "drain",
    admin: "drain",
    description:
      "take targets out of the table for new flows; where nflb pins connections (conntrack), established ones finish on them",
  },
];

export function registerTargetCommands(program: Command): void {
  const target = program
    .command("target")
    .description(
      "the operator's word on targets: enable, disable, drain (kept in the state; health checks never override it)",
    );
  for (const { verb, admin, description } of VERBS) {
    addNameOption(
      target
        .command(verb)
        .description(description)
        .argument("<fwmark...>", "targets, each named by its fwmark"),
    ).action(
      action((fwmarks: string[], opts: { name: string }) => {
        const marks = collectFwmarks(fwmarks);
        changeTargets(opts.name, (targets) => setAdmin(targets, marks, admin));
      }),
    );
  }
}
