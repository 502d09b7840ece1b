// Kill sweeps by time, for the record (the tests kill at every operation boundary):
// `nflb setup` (then `nflb teardown`) killed by SIGKILL every STEP ms from just before its
// first operation (node's start-up changes nothing) to past its end, and `nflb teardown`
// (then again) the same, in every mode, each mode in a network namespace of its own;
// after each kill the namespace must be exactly as before.
//   node dist/scripts/kill-sweep.js [STEP_MS=5] [MODE...]   (root; modes: see KILL_MODES)
import {
  KILL_MODES,
  sweepBed,
  sweepSetupKillTimes,
  sweepTeardownKillTimes,
  type TimeSweepOutcome,
} from "../test/helpers/killsweep.js";
import { isRoot, Topology } from "../test/helpers/netns.js";

if (!isRoot()) {
  process.stderr.write("kill-sweep: needs root (network namespaces)\n");
  process.exit(1);
}
const [stepText, ...names] = process.argv.slice(2);
const step = Number(stepText ?? 5);
const modes = (names.length > 0 ? names : Object.keys(KILL_MODES)).map((n) => {
  const m = KILL_MODES[n];
  if (!m) throw new Error(`unknown mode ${n}: ${Object.keys(KILL_MODES).join(", ")}`);
  return m;
});

const topo = new Topology();
const rows: string[] = [];
const row = (label: string, what: string, r: TimeSweepOutcome) => {
  const line = `| ${label} | ${what} | ${r.firstMs}-${r.endMs} ms | ${r.kills} | ${JSON.stringify(r.outcomes)} | ${r.failures.length} |`;
  rows.push(line);
  process.stdout.write(`${line}\n`);
  for (const f of r.failures) process.stdout.write(`  ${f.replaceAll("\n", "\n  ")}\n`);
};
try {
  const started = performance.now();
  await Promise.all(
    modes.map(async (mode, i) => {
      const bed = await sweepBed(topo, `ts${i}`);
      try {
        row(mode.label, "setup", await sweepSetupKillTimes({ ...bed, name: "ts", mode }, step));
        row(
          mode.label,
          "teardown",
          await sweepTeardownKillTimes({ ...bed, name: "tt", mode }, step),
        );
      } finally {
        bed.close();
      }
    }),
  );
  process.stdout.write(
    `\nstep ${step} ms, ${Math.round((performance.now() - started) / 1000)} s\n| mode | command | first operation - end (medians) | kills | outcomes | left changes |\n| --- | --- | --- | --- | --- | --- |\n${rows.join("\n")}\n`,
  );
} finally {
  topo.destroy();
}
