// Cost of flow matching per packet (FlowMatcher.match after classify) and of compiling
// the flows. The goal: with 2,000 flows, the matching one of lowest priority,
// the daemon keeps >= 90% of its single-flow packet rate; at ~2.4 us per packet that
// leaves match() well under ~150 ns, about constant in the number of flows.
//
// Scenarios (the matching flow always the last, i.e. lowest priority):
// - 1 flow;
// - 2,000 services: 1,999 flows each for their own VIP and port (IPv4, then IPv6);
// - 2,000 adversarial: every dimension unselective (1,000 flows accept the packet's
//   ports but not its source, 999 its source but not its ports), so no set is small:
//   "halves" (the two groups in two blocks of priorities: the word summaries skip most
//   words) and "interleaved" (alternating priorities: every word is visited, 63 at 2,000
//   flows), the worst case short of byte matches; the scan cache answers repeated set
//   combinations, so it is measured without the cache too (the cost of a cache miss).
import { pathToFileURL } from "node:url";
import { FlowMatcher, type FlowSpec, parseFlow } from "../src/flows/index.js";
import { defaultClassifyOptions, infoFromTuple, PacketInfo } from "../src/packet/classify.js";

const MATCHES_PER_RUN = 1 << 20;
const RUNS = 7;
const PACKETS = 64;

function servicesFlows(n: number, family: 4 | 6): FlowSpec[] {
  const flows: FlowSpec[] = [];
  for (let i = 0; i < n - 1; i++) {
    const vip = family === 4 ? `10.1.${i >> 8}.${i & 255}` : `fd00:1::${i.toString(16)}`;
    flows.push(
      parseFlow({
        name: `svc${i}`,
        target: `lb${i % 16}`,
        priority: n - i,
        protocols: i % 3 === 0 ? "udp" : "tcp",
        dsts: vip,
        dports: String(1000 + (i % 500)),
      }),
    );
  }
  flows.push(
    parseFlow({
      name: "last",
      target: "lb-last",
      priority: 0,
      protocols: "tcp",
      dsts: family === 4 ? "10.200.0.0/16" : "fd00:200::/32",
      dports: "80",
    }),
  );
  return flows;
}

function adversarialFlows(n: number, interleaved: boolean): FlowSpec[] {
  const flows: FlowSpec[] = [];
  for (let i = 0; i < n - 1; i++) {
    const half = interleaved ? i % 2 === 0 : i < n / 2;
    flows.push(
      parseFlow({
        name: `adv${i}`,
        target: "lb",
        priority: n - i,
        protocols: "tcp",
        // One half rejects the packet's port, the other its source.
        ...(half
          ? { dports: `${2000 + i}-${3000 + i}` }
          : { srcs: `192.168.${i & 255}.0/24,172.16.0.0/12` }),
      }),
    );
  }
  flows.push(parseFlow({ name: "last", target: "lb-last", priority: 0, protocols: "tcp" }));
  return flows;
}

function packets(family: 4 | 6): PacketInfo[] {
  const out: PacketInfo[] = [];
  for (let i = 0; i < PACKETS; i++) {
    const info = new PacketInfo();
    const src = family === 4 ? `198.51.${i}.${i * 3}` : `2001:db8::${i.toString(16)}`;
    const dst = family === 4 ? `10.200.0.${i}` : `fd00:200::${i.toString(16)}`;
    infoFromTuple("tcp", src, 10000 + i * 7, dst, 80, defaultClassifyOptions, info);
    out.push(info);
  }
  return out;
}

function measureMatch(matcher: FlowMatcher, infos: PacketInfo[], expect: number): number {
  const buf = new Uint8Array(256);
  for (const info of infos) {
    const got = matcher.match(info, buf);
    if (got !== expect) throw new Error(`bench setup: matched ${got}, expected ${expect}`);
  }
  const loop = (): number => {
    let acc = 0;
    for (let i = 0, j = 0; i < MATCHES_PER_RUN; i++) {
      acc += matcher.match(infos[j], buf);
      if (++j === PACKETS) j = 0;
    }
    return acc;
  };
  loop(); // warm-up
  const times: number[] = [];
  let sink = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    sink += loop();
    times.push(Number(process.hrtime.bigint() - t0) / MATCHES_PER_RUN);
  }
  if (sink === -1) console.log(sink);
  times.sort((a, b) => a - b);
  return times[RUNS >> 1];
}

function measureCompile(flows: FlowSpec[]): number {
  new FlowMatcher(flows); // warm-up
  const times: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    new FlowMatcher(flows);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[2];
}

export function benchFlows(): { name: string; median: number; unit: string }[] {
  const unit = "ns/match";
  const one = new FlowMatcher([
    parseFlow({ name: "web", target: "lb", protocols: "tcp", dsts: "10.200.0.0/16", dports: "80" }),
  ]);
  const svc4 = servicesFlows(2000, 4);
  const svc6 = servicesFlows(2000, 6);
  const adv = adversarialFlows(2000, false);
  const advi = adversarialFlows(2000, true);
  const m4 = new FlowMatcher(svc4);
  const m6 = new FlowMatcher(svc6);
  const ma = new FlowMatcher(adv);
  const mi = new FlowMatcher(advi);
  const mn = new FlowMatcher(advi, { cacheEntries: 0 });
  const p4 = packets(4);
  const p6 = packets(6);
  return [
    { name: "match, 1 flow (IPv4 TCP)", median: measureMatch(one, p4, 0), unit },
    {
      name: "match, 2,000 services, lowest matches (IPv4)",
      median: measureMatch(m4, p4, 1999),
      unit,
    },
    {
      name: "match, 2,000 services, lowest matches (IPv6)",
      median: measureMatch(m6, p6, 1999),
      unit,
    },
    { name: "match, 2,000 adversarial, halves", median: measureMatch(ma, p4, 1999), unit },
    { name: "match, 2,000 adversarial, interleaved", median: measureMatch(mi, p4, 1999), unit },
    {
      name: "match, 2,000 adversarial, interleaved, no scan cache (63 words)",
      median: measureMatch(mn, p4, 1999),
      unit,
    },
    { name: "compile, 2,000 services (IPv4)", median: measureCompile(svc4), unit: "ms" },
    { name: "compile, 2,000 adversarial", median: measureCompile(adv), unit: "ms" },
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of benchFlows()) console.log(`${r.name}: ${r.median.toFixed(1)} ${r.unit}`);
}
