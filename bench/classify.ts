// Per-packet cost of the data plane's pure work: classify + decide() (what a worker does
// per packet, verdict aside), and its parts: classify + flowHash + Maglev-style table
// lookup, classify alone, hash and lookup alone; over the real fixture packets laid out in
// one buffer as an NFQUEUE batch would be (each cut to a 256-byte copy range). Median of
// several runs of >= 1M packets.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Decider, Decision, FixedTable } from "../src/decide/index.js";
import { reciprocalScale } from "../src/hash/jhash.js";
import { type ClassifyOptions, classify, flowHash, PacketInfo } from "../src/packet/classify.js";
import { readPcap } from "../test/helpers/pcap.js";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures");
const COPY_RANGE = 256;
const PACKETS_PER_RUN = 1 << 20;
const RUNS = 7;
const M = 65537;

interface Batch {
  buf: Uint8Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
}

function loadBatch(filter: (name: string) => boolean): Batch {
  const pkts: Uint8Array[] = [];
  for (const f of readdirSync(FIXTURES).sort()) {
    if (!f.endsWith(".pcap") || !filter(f)) continue;
    for (const p of readPcap(readFileSync(join(FIXTURES, f)))) {
      if (p.ip) pkts.push(p.ip.subarray(0, COPY_RANGE));
    }
  }
  const buf = new Uint8Array(pkts.reduce((n, p) => n + p.length, 0));
  const offsets = new Uint32Array(pkts.length);
  const lengths = new Uint32Array(pkts.length);
  let at = 0;
  pkts.forEach((p, i) => {
    buf.set(p, at);
    offsets[i] = at;
    lengths[i] = p.length;
    at += p.length;
  });
  return { buf, offsets, lengths };
}

type Loop = (
  b: Batch,
  n: number,
  opts: ClassifyOptions,
  info: PacketInfo,
  table: Uint32Array,
) => number;

// The three loops are separate functions so that each is optimised for its own work.
const full: Loop = (b, n, opts, info, table) => {
  const { buf, offsets, lengths } = b;
  const count = offsets.length;
  let acc = 0;
  for (let i = 0, j = 0; i < n; i++) {
    if (classify(buf, offsets[j], lengths[j], opts, info) === 0) {
      acc += table[reciprocalScale(flowHash(info, 0x1234), M)];
    }
    if (++j === count) j = 0;
  }
  return acc;
};

const classifyOnly: Loop = (b, n, opts, info) => {
  const { buf, offsets, lengths } = b;
  const count = offsets.length;
  let acc = 0;
  for (let i = 0, j = 0; i < n; i++) {
    acc += classify(buf, offsets[j], lengths[j], opts, info) + info.keyWords;
    if (++j === count) j = 0;
  }
  return acc;
};

const decider = new Decider(new FixedTable(new Uint32Array(M), 0x1234), "bench");
const decision = new Decision();

/** The worker's per-packet work: classify, then decide (no flows, one load balancer). */
const classifyDecide: Loop = (b, n, opts, info) => {
  const { buf, offsets, lengths } = b;
  const count = offsets.length;
  let acc = 0;
  for (let i = 0, j = 0; i < n; i++) {
    const off = offsets[j];
    const len = lengths[j];
    classify(buf, off, len, opts, info);
    decider.decide(info, buf, off, len, len, 0, decision);
    acc += decision.fwmark + decision.reason;
    if (++j === count) j = 0;
  }
  return acc;
};

const hashOnly: Loop = (_b, n, _opts, info, table) => {
  let acc = 0;
  for (let i = 0; i < n; i++) {
    info.key[0] = i; // a different key each time
    acc += table[reciprocalScale(flowHash(info, 0x1234), M)];
  }
  return acc;
};

function measure(loop: Loop, batch: Batch): number {
  const opts: ClassifyOptions = { sctpPortsOnly: true, sctpEncapPort: 0 };
  const info = new PacketInfo();
  const table = new Uint32Array(M);
  for (let i = 0; i < M; i++) table[i] = (i % 97) + 1;
  decider.own = new FixedTable(table, 0x1234);
  // Prime info for hashOnly (an IPv4 5-tuple key).
  classify(batch.buf, batch.offsets[0], batch.lengths[0], opts, info);
  loop(batch, PACKETS_PER_RUN, opts, info, table); // warm-up: let the JIT settle
  const times: number[] = [];
  let sink = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    sink += loop(batch, PACKETS_PER_RUN, opts, info, table);
    times.push(Number(process.hrtime.bigint() - t0) / PACKETS_PER_RUN);
  }
  if (sink === -1) console.log(sink); // keeps the work observable
  times.sort((a, b) => a - b);
  return times[RUNS >> 1];
}

export function benchClassify(): { name: string; median: number; unit: string }[] {
  const mix = loadBatch(() => true);
  const tcp4 = loadBatch((f) => f === "tcp-v4.pcap");
  const v6 = loadBatch((f) => f.includes("v6") || f.startsWith("ipv6") || f.startsWith("icmp6"));
  const unit = "ns/packet";
  return [
    {
      name: `classify+decide, fixture mix (${mix.offsets.length} packets)`,
      median: measure(classifyDecide, mix),
      unit,
    },
    { name: "classify+decide, TCP/IPv4 only", median: measure(classifyDecide, tcp4), unit },
    {
      name: `classify+flowHash+lookup, fixture mix (${mix.offsets.length} packets)`,
      median: measure(full, mix),
      unit,
    },
    { name: "classify+flowHash+lookup, TCP/IPv4 only", median: measure(full, tcp4), unit },
    { name: "classify+flowHash+lookup, IPv6 fixtures only", median: measure(full, v6), unit },
    { name: "classify only, fixture mix", median: measure(classifyOnly, mix), unit },
    { name: "flowHash+lookup only, IPv4 5-tuple", median: measure(hashOnly, mix), unit },
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of benchClassify()) console.log(`${r.name}: ${r.median.toFixed(1)} ${r.unit}`);
}
