// Maglev micro-benchmarks: table build time at M=65537 and lookup cost.
// Run: node dist/bench/maglev.js

import { pathToFileURL } from "node:url";
import {
  buildMaglevTable,
  DEFAULT_TABLE_SIZE,
  type MaglevTarget,
  maglevLookup,
} from "../src/maglev/maglev.js";

export interface BenchResult {
  name: string;
  median: number;
  unit: string;
}

const WARMUP = 5;
const RUNS = 21;

function median(values: number[]): number {
  const sorted = values.slice().sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Wall time of fn() in ms: median of RUNS after WARMUP runs (lets the JIT settle). */
function timeMs(fn: () => void): number {
  for (let i = 0; i < WARMUP; i++) fn();
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    fn();
    samples.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return median(samples);
}

/** Fixed pseudo-random stream (xorshift32), so every run measures the same input. */
function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

function targets(n: number, weightOf: (i: number) => number): MaglevTarget[] {
  return Array.from({ length: n }, (_, i) => ({ fwmark: i + 1, weight: weightOf(i) }));
}

function benchBuild(name: string, list: MaglevTarget[]): BenchResult {
  const out = new Uint32Array(DEFAULT_TABLE_SIZE);
  return {
    name,
    median: timeMs(() => buildMaglevTable(list, DEFAULT_TABLE_SIZE, out)),
    unit: "ms",
  };
}

function benchLookup(): BenchResult {
  const table = buildMaglevTable(
    targets(100, () => 1),
    DEFAULT_TABLE_SIZE,
  );
  const next = xorshift(0x2545f491);
  const hashes = new Uint32Array(1 << 16);
  for (let i = 0; i < hashes.length; i++) hashes[i] = next();
  const ops = 1 << 22;
  let sink = 0;
  const loop = () => {
    for (let i = 0; i < ops; i++) sink ^= maglevLookup(table, hashes[i & 0xffff]);
  };
  const ms = timeMs(loop);
  // The sink keeps the lookups from being optimised away.
  if (sink === -1) console.log(sink);
  return { name: "lookup M=65537 N=100", median: (ms * 1e6) / ops, unit: "ns/op" };
}

export function benchMaglev(): BenchResult[] {
  const rnd = xorshift(7);
  return [
    benchBuild(
      "build M=65537 N=10",
      targets(10, () => 1),
    ),
    benchBuild(
      "build M=65537 N=100",
      targets(100, () => 1),
    ),
    benchBuild(
      "build M=65537 N=1000",
      targets(1000, () => 1),
    ),
    benchBuild(
      "build M=65537 N=100 weights 1..10",
      targets(100, () => 1 + (rnd() % 10)),
    ),
    benchBuild(
      "build M=65537 N=100 weights 1..65535",
      targets(100, () => 1 + (rnd() % 65535)),
    ),
    benchLookup(),
  ];
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of benchMaglev()) {
    console.log(`${r.name.padEnd(40)} ${r.median.toFixed(r.unit === "ms" ? 3 : 2)} ${r.unit}`);
  }
}
