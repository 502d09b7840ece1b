// `npm run bench`: the micro-benchmarks (Maglev, classifier), then the data-plane bench
// on network namespaces (root only). Prints tables and writes bench/results.json.
// Options after `--` go to the data-plane bench: --only plain,statistic,daemon64,flows1,
// flows2000,daemon1 (the default; flows2000vip on request) --rounds N --pps N --seconds N,
// and --no-dataplane to skip it.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { benchClassify } from "./classify.js";
import {
  benchDataplane,
  type DataplaneReport,
  DEFAULT_SCENARIOS,
  dataplaneUnavailable,
  formatDataplane,
  SCENARIOS,
  type ScenarioName,
} from "./dataplane.js";
import { benchFlows } from "./flows.js";
import { benchFragments } from "./fragments.js";
import { type BenchResult, benchMaglev } from "./maglev.js";

const RESULTS = fileURLToPath(new URL("../../bench/results.json", import.meta.url));

function formatResults(title: string, results: readonly BenchResult[]): string {
  const width = Math.max(...results.map((r) => r.name.length));
  const lines = results.map((r) => {
    const digits = r.median >= 100 ? 0 : r.median >= 1 ? 2 : 3;
    return `  ${r.name.padEnd(width)}  ${r.median.toFixed(digits).padStart(10)} ${r.unit}`;
  });
  return [title, ...lines].join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: "string" },
      rounds: { type: "string" },
      pps: { type: "string" },
      seconds: { type: "string" },
      "no-dataplane": { type: "boolean" },
    },
  });
  const notes: string[] = [];
  const started = Date.now();

  const maglev = benchMaglev();
  console.log(formatResults("maglev", maglev));

  const classify = benchClassify();
  console.log(`\n${formatResults("classify", classify)}`);

  const fragments = benchFragments();
  console.log(`\n${formatResults("fragments", fragments)}`);

  const flows = benchFlows();
  console.log(`\n${formatResults("flows", flows)}`);

  let dataplane: DataplaneReport | undefined;
  const why = values["no-dataplane"] ? "--no-dataplane" : dataplaneUnavailable();
  if (why) {
    notes.push(`data-plane bench skipped: ${why}`);
    console.log(`\ndata plane: skipped (${why})`);
  } else {
    const only = values.only?.split(",").map((s) => s.trim()) ?? [...DEFAULT_SCENARIOS];
    const unknown = only.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
    if (unknown.length > 0)
      throw new Error(`unknown scenario ${unknown.join(", ")}: ${SCENARIOS.join(", ")}`);
    console.log("\ndata plane: running (progress on stderr)...");
    dataplane = await benchDataplane({
      only: only as ScenarioName[],
      ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
      ...(values.pps ? { pps: Number(values.pps) } : {}),
      ...(values.seconds ? { seconds: Number(values.seconds) } : {}),
    });
    console.log(`\n${formatDataplane(dataplane)}`);
  }

  const report = {
    date: new Date().toISOString(),
    seconds: (Date.now() - started) / 1000,
    maglev,
    classify,
    fragments,
    flows,
    dataplane: dataplane && {
      setup: dataplane.setup,
      medians: dataplane.medians,
      ratios: dataplane.ratios,
      perRound: dataplane.perRound,
      notes: dataplane.notes,
      rounds: dataplane.rounds,
    },
    notes,
  };
  writeFileSync(RESULTS, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nresults written to ${RESULTS} (${report.seconds.toFixed(0)} s)`);
}

await main();
