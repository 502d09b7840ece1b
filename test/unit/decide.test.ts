// The data plane's decision, table-driven (in the style of Katran's test fixtures): each
// fixture is a description, a packet as bytes (crafted, run through the real classifier)
// and the decision expected: verdict, reason, flow, load balancer, fragment outcome and,
// for a balanced packet, which key the hash must have covered. The expected target is
// computed here from that key with the kernel's jhash, independently of the key layout
// the classifier and decide() use; each such fixture also checks that a wrong key (not
// swapped, addresses instead of ports, ...) would have picked another target, so the
// fixture can tell them apart. Every reason of decide() appears. No root needed.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { C, countDecision, INVALID_REASON_SLOTS } from "../../src/dataplane/counters.js";
import {
  type DecideOptions,
  Decider,
  Decision,
  decideQuestion,
  FixedTable,
  type FlowRouting,
  NO_SLOT,
  REASON_NAMES,
  Reason,
  VERDICT_NAMES,
  Verdict,
} from "../../src/decide/index.js";
import { FlowMatcher, parseFlow } from "../../src/flows/index.js";
import {
  DEFAULT_FRAG_CONFIG,
  FRAG_OUTCOME_NAMES,
  FragmentTable,
} from "../../src/fragments/table.js";
import { jhashWords, reciprocalScale } from "../../src/hash/jhash.js";
import { buildMaglevTable } from "../../src/maglev/maglev.js";
import {
  type ClassifyOptions,
  classify,
  encapPortMap,
  PacketInfo,
} from "../../src/packet/classify.js";
import {
  addressBytes,
  icmpMessage,
  ipPacket,
  PROTO_ICMP,
  PROTO_ICMPV6,
  PROTO_TCP,
  PROTO_UDP,
  sctpInIp,
  sctpInUdp,
  tcpSegment,
  udpDatagram,
} from "../helpers/craft.js";
import { fragmentPacket } from "../helpers/fragment.js";

const M = 1009;
const CLIENT = "10.100.1.10";
const CLIENT2 = "10.100.1.11";
const VIP = "10.200.0.1";
const VIP2 = "10.200.0.2";
const ROUTER = "10.100.9.1";
const CLIENT6 = "fd00:101::10";
const VIP6 = "fd00:200::1";
const ROUTER6 = "fd00:109::1";
const ENCAP = 9899;

interface Lb {
  name: string;
  seed: number;
  fwmarks: number[];
  marks: Uint32Array;
  table: FixedTable;
}

function lb(name: string, seed: number, fwmarks: number[]): Lb {
  const marks = buildMaglevTable(
    fwmarks.map((fwmark) => ({ fwmark, weight: 1 })),
    M,
  );
  return { name, seed, fwmarks, marks, table: new FixedTable(marks, seed) };
}

const WEB = lb("web", 0x1234, [1, 2, 3]);
const API = lb("api", 0x5678, [11, 12, 13]);
const RAW = lb("raw", 0x9abc, [21, 22, 23]);
const EMPTY = lb("empty", 0x1111, []);
const TIER = lb("tier", 0x2222, [101, 102]);
const LBS = new Map([WEB, API, RAW, EMPTY, TIER].map((l) => [l.name, l]));

// ---------------------------------------------------------------- the expected target

type Mode = "5-tuple" | "addresses" | "ports";

/** The flow key a hash must cover: a mode and a tuple (source -> destination). */
interface Key {
  mode: Mode;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
}

/** A port as nft's key word: 2 bytes big-endian, 2 zero bytes, read as a native word. */
function portWord(port: number): number {
  return new Uint32Array(Uint8Array.of(port >> 8, port & 0xff, 0, 0).buffer)[0];
}

function addressWords(address: string): number[] {
  const bytes = addressBytes(address);
  return Array.from(new Uint32Array(bytes.slice().buffer));
}

/** The fwmark `l`'s table gives the key: nft's concatenation, the kernel's jhash. */
function targetOf(l: Lb, k: Key): number {
  const words: number[] = [];
  if (k.mode !== "ports") words.push(...addressWords(k.src), ...addressWords(k.dst));
  if (k.mode !== "addresses") words.push(portWord(k.sport ?? 0), portWord(k.dport ?? 0));
  const hash = jhashWords(Uint32Array.from(words), words.length, l.seed);
  return l.marks[reciprocalScale(hash, M)];
}

/** Keys a mistaken decision might have used instead of `k`. */
function wrongKeys(k: Key): Key[] {
  const swapped = { ...k, src: k.dst, dst: k.src, sport: k.dport, dport: k.sport };
  if (k.mode === "5-tuple") return [swapped, { ...k, mode: "addresses" }];
  if (k.mode === "ports") return [{ ...k, mode: "5-tuple" }, swapped];
  return [swapped, { ...k, mode: "5-tuple", sport: k.sport ?? 1234, dport: k.dport ?? 80 }];
}

// ---------------------------------------------------------------- packets

const tcp = (src: string, sport: number, dst: string, dport: number) =>
  ipPacket(src, dst, PROTO_TCP, tcpSegment(sport, dport));
const udp = (src: string, sport: number, dst: string, dport: number, size = 16) =>
  ipPacket(src, dst, PROTO_UDP, udpDatagram(src, dst, sport, dport, new Uint8Array(size)));
const sctp = (src: string, sport: number, dst: string, dport: number) =>
  sctpInIp(src, dst, { sport, dport, vtag: 7, chunks: [] });
/** An ICMP(v6) error from a router, quoting the first 28 (IPv6: 48) bytes of `quoted`. */
function icmpError(type: number, code: number, quoted: Uint8Array): Uint8Array {
  const v6 = quoted[0] >> 4 === 6;
  const body = quoted.subarray(0, v6 ? 48 : 28);
  return v6
    ? ipPacket(ROUTER6, VIP6, PROTO_ICMPV6, icmpMessage(type, code, body))
    : ipPacket(ROUTER, VIP, PROTO_ICMP, icmpMessage(type, code, body));
}
const echo = (src: string, dst: string) =>
  dst.includes(":")
    ? ipPacket(src, dst, PROTO_ICMPV6, icmpMessage(128, 0, new Uint8Array(8)))
    : ipPacket(src, dst, PROTO_ICMP, icmpMessage(8, 0, new Uint8Array(8)));
/** The fragments of a UDP datagram of `size` payload bytes: [first, later...]. */
const fragments = (src: string, sport: number, dst: string, dport: number, id: number) =>
  fragmentPacket(udp(src, sport, dst, dport, 3000), 1500, id);

// ---------------------------------------------------------------- fixtures

interface Expect {
  verdict: "accept" | "drop" | "accept-unmarked";
  reason: (typeof REASON_NAMES)[number];
  /** An exact mark; or, for a hashed decision, the key (and `lb`) the mark follows. */
  fwmark?: number;
  key?: Key;
  lb?: string | null;
  flow?: string | null;
  fragment?: (typeof FRAG_OUTCOME_NAMES)[number] | null;
  /** For a later fragment: the mark of the datagram's first fragment. */
  sameAs?: string;
  /** A key that must give another target (an ICMP error's outer header), so that a
   * decision keyed on it would fail the fixture. */
  notLike?: Key;
}

interface Step {
  description: string;
  packet: Uint8Array;
  /** Bytes the queue copied (default: all). */
  copied?: number;
  expect: Expect;
}

interface Scenario {
  name: string;
  decider: () => Decider;
  classify?: ClassifyOptions;
  /** Steps in order: a scenario's decider keeps its state (the fragment table). */
  steps: Step[];
}

const plainOptions: ClassifyOptions = { sctpPortsOnly: true, sctpEncapPort: 0 };

function decider(own: Lb, options?: Partial<DecideOptions>): Decider {
  return new Decider(own.table, own.name, {
    notargetsFwmark: 0,
    nolbFwmark: 0,
    acceptInvalid: false,
    ...options,
  });
}

function flows(promiscuousPing: boolean): FlowRouting {
  const matcher = new FlowMatcher(
    [
      { name: "api", target: "api", protocols: "tcp", dsts: VIP, dports: "80", priority: 10 },
      { name: "web", target: "web", protocols: "tcp,udp", dsts: "10.200.0.0/24" },
      { name: "raw", target: "raw", dsts: VIP2, priority: 20 },
      { name: "web6", target: "web", protocols: "udp", dsts: "fd00:200::/64" },
      { name: "sctp", target: "api", protocols: "sctp", dsts: VIP, udpencap: ENCAP },
    ].map(parseFlow),
    { promiscuousPing },
  );
  const lbNames = matcher.flows.map((f) => f.target);
  const lbs = lbNames.map((n) => (LBS.get(n) as Lb).table);
  return { matcher, lbs, lbNames };
}

function withFlows(promiscuousPing: boolean, options?: Partial<DecideOptions>): Decider {
  const d = decider(WEB, options);
  d.flows = flows(promiscuousPing);
  return d;
}

/** A client address whose fragments the tier gives to the instance `fwmark`. */
function clientOwnedBy(fwmark: number): string {
  for (let i = 1; i < 255; i++) {
    const src = `10.100.2.${i}`;
    if (targetOf(TIER, { mode: "addresses", src, dst: VIP }) === fwmark) return src;
  }
  throw new Error(`no client of instance ${fwmark}`);
}
const MINE = clientOwnedBy(101);
const PEERS = clientOwnedBy(102);

function withTier(): Decider {
  const d = decider(WEB);
  d.tier = TIER.table;
  d.ownFwmark = 101;
  return d;
}

function withFragments(tier = false): Decider {
  const d = tier ? withTier() : decider(WEB);
  d.fragments = new FragmentTable({ ...DEFAULT_FRAG_CONFIG, maxFragmentBytes: 1000 }, 7);
  return d;
}

const balanced = (key: Key, lbName = "web", flow: string | null = null): Expect => ({
  verdict: "accept",
  reason: "balanced",
  key,
  lb: lbName,
  flow,
});
const to80 = (mode: Mode = "5-tuple"): Key => ({
  mode,
  src: CLIENT,
  dst: VIP,
  sport: 1235,
  dport: 80,
});
const quoted80 = tcp(VIP, 80, CLIENT, 1235); // what the target sent back
/** An ICMP error's outer header, which must not decide where the error goes. */
const OUTER4: Key = { mode: "addresses", src: ROUTER, dst: VIP };
const OUTER6: Key = { mode: "addresses", src: ROUTER6, dst: VIP6 };
const quoted6 = udp(VIP6, 53, CLIENT6, 5357);
const to53v6: Key = { mode: "5-tuple", src: CLIENT6, dst: VIP6, sport: 5357, dport: 53 };
const later1 = fragments(CLIENT, 4000, VIP, 9000, 0x11);
const later2 = fragments(CLIENT, 4001, VIP, 9000, 0x12);
const big = fragments(CLIENT, 4002, VIP, 9000, 0x13);
const truncated = fragments(CLIENT, 4003, VIP, 9000, 0x14);
const mine = fragments(MINE, 4004, VIP, 9000, 0x15);
const peers = fragments(PEERS, 4005, VIP, 9000, 0x16);
const datagram = (sport: number): Key => ({
  mode: "5-tuple",
  src: CLIENT,
  dst: VIP,
  sport,
  dport: 9000,
});

const SCENARIOS: Scenario[] = [
  {
    name: "one load balancer, no flows",
    decider: () => decider(WEB),
    steps: [
      {
        description: "TCP/IPv4: 5-tuple",
        packet: tcp(CLIENT, 1235, VIP, 80),
        expect: balanced(to80()),
      },
      {
        description: "UDP/IPv6: 5-tuple",
        packet: udp(CLIENT6, 5357, VIP6, 53),
        expect: balanced(to53v6),
      },
      {
        description: "SCTP: the ports only (a multihomed association keeps its target)",
        packet: sctp("10.100.7.7", 2905, VIP, 3868),
        expect: balanced({ mode: "ports", src: "10.100.7.7", dst: VIP, sport: 2905, dport: 3868 }),
      },
      {
        description: "ICMP echo: the addresses",
        packet: echo(CLIENT, VIP),
        expect: balanced({ mode: "addresses", src: CLIENT, dst: VIP }),
      },
      ...(
        [
          [3, 4, "fragmentation needed"],
          [3, 1, "host unreachable"],
          [4, 0, "source quench"],
          [5, 1, "redirect"],
          [11, 0, "time exceeded"],
          [12, 0, "parameter problem"],
        ] as const
      ).map(([type, code, what]) => ({
        description: `ICMP ${what} (${type}/${code}): the quoted connection, swapped`,
        packet: icmpError(type, code, quoted80),
        expect: { ...balanced(to80()), notLike: OUTER4 },
      })),
      ...(
        [
          [1, 4, "destination unreachable"],
          [2, 0, "packet too big"],
          [3, 0, "time exceeded"],
          [4, 0, "parameter problem"],
        ] as const
      ).map(([type, code, what]) => ({
        description: `ICMPv6 ${what} (${type}/${code}): the quoted flow, swapped`,
        packet: icmpError(type, code, quoted6),
        expect: { ...balanced(to53v6), notLike: OUTER6 },
      })),
      {
        description: "an unfragmented packet with a tier is not placed in the tier",
        packet: tcp(PEERS, 1235, VIP, 80),
        expect: balanced({ ...to80(), src: PEERS }),
      },
      {
        description: "a later fragment without fragment tracking: the addresses",
        packet: later1[1],
        expect: balanced({ mode: "addresses", src: CLIENT, dst: VIP }),
      },
      {
        description: "truncated IPv4 header: invalid, dropped",
        packet: tcp(CLIENT, 1235, VIP, 80),
        copied: 12,
        expect: { verdict: "drop", reason: "invalid", lb: null },
      },
    ],
  },
  {
    name: "--invalid accept, --notargets-fwmark: a load balancer without targets",
    decider: () => decider(EMPTY, { acceptInvalid: true, notargetsFwmark: 77 }),
    steps: [
      {
        description: "no active target: marked --notargets-fwmark",
        packet: tcp(CLIENT, 1235, VIP, 80),
        expect: { verdict: "accept", reason: "no-target", fwmark: 77, lb: "empty" },
      },
      {
        description: "an invalid packet: accepted unmarked",
        packet: Uint8Array.of(0x55, 0, 0, 20),
        expect: { verdict: "accept-unmarked", reason: "invalid", lb: null },
      },
    ],
  },
  {
    name: "no target, default options",
    decider: () => decider(EMPTY),
    steps: [
      {
        description: "no active target: dropped",
        packet: udp(CLIENT, 1, VIP, 53),
        expect: { verdict: "drop", reason: "no-target", lb: "empty" },
      },
    ],
  },
  {
    name: "flows",
    decider: () => withFlows(false),
    // The daemon classifies UDP to a flow's --udpencap port as SCTP over UDP.
    classify: {
      sctpPortsOnly: true,
      sctpEncapPort: 0,
      sctpEncapPorts: encapPortMap(flows(false).matcher.encapPorts),
    },
    steps: [
      {
        description: "TCP to VIP:80: flow api (priority 10) over web (0)",
        packet: tcp(CLIENT, 1235, VIP, 80),
        expect: balanced(to80(), "api", "api"),
      },
      {
        description: "TCP to VIP:443: flow web",
        packet: tcp(CLIENT, 1235, VIP, 443),
        expect: balanced({ ...to80(), dport: 443 }, "web", "web"),
      },
      {
        description:
          "UDP to VIP2: flow raw has no protocols: its load balancer hashes the addresses",
        packet: udp(CLIENT, 5000, VIP2, 53),
        expect: balanced(
          { mode: "addresses", src: CLIENT, dst: VIP2, sport: 5000, dport: 53 },
          "raw",
          "raw",
        ),
      },
      {
        description: "ICMP fragmentation needed for a port-80 connection: flow api",
        packet: icmpError(3, 4, quoted80),
        expect: { ...balanced(to80(), "api", "api"), notLike: OUTER4 },
      },
      {
        description: "ICMP echo to VIP: only flows without protocols take it: none here",
        packet: echo(CLIENT, VIP),
        expect: { verdict: "drop", reason: "no-flow", lb: null, flow: null },
      },
      {
        description: "ICMP echo to VIP2: flow raw (no protocols)",
        packet: echo(CLIENT, VIP2),
        expect: balanced({ mode: "addresses", src: CLIENT, dst: VIP2 }, "raw", "raw"),
      },
      {
        description: "UDP/IPv6: flow web6",
        packet: udp(CLIENT6, 5357, VIP6, 53),
        expect: balanced(to53v6, "web", "web6"),
      },
      {
        description: "nothing matches: dropped",
        packet: tcp(CLIENT, 1234, "10.201.0.1", 80),
        expect: { verdict: "drop", reason: "no-flow", lb: null, flow: null },
      },
      {
        description: "SCTP over UDP to the flow's --udpencap port: flow sctp, the inner ports",
        packet: sctpInUdp("10.100.7.8", VIP, 40000, ENCAP, {
          sport: 2905,
          dport: 3868,
          vtag: 1,
          chunks: [],
        }),
        expect: balanced(
          { mode: "ports", src: "10.100.7.8", dst: VIP, sport: 2905, dport: 3868 },
          "api",
          "sctp",
        ),
      },
    ],
  },
  {
    name: "flows with --promiscuous-ping and --nolb-fwmark",
    decider: () => withFlows(true, { nolbFwmark: 66 }),
    steps: [
      {
        description:
          "ICMP echo to VIP: the best flow whose addresses match (api), addresses hashed",
        packet: echo(CLIENT2, VIP),
        expect: balanced({ mode: "addresses", src: CLIENT2, dst: VIP }, "api", "api"),
      },
      {
        description: "nothing matches: marked --nolb-fwmark",
        packet: tcp(CLIENT, 1234, "10.201.0.1", 80),
        expect: { verdict: "accept", reason: "no-flow", fwmark: 66, lb: null, flow: null },
      },
    ],
  },
  {
    name: "a tier of two instances (this one is 101), no fragment tracking",
    decider: withTier,
    steps: [
      {
        description: "a fragment the tier gives to instance 102: marked 102",
        packet: peers[1],
        expect: { verdict: "accept", reason: "tier", fwmark: 102, lb: null },
      },
      {
        description: "a first fragment too: the tier places by addresses",
        packet: peers[0],
        expect: { verdict: "accept", reason: "tier", fwmark: 102, lb: null },
      },
      {
        description: "a fragment of this instance: balanced here on its addresses",
        packet: mine[1],
        expect: balanced({ mode: "addresses", src: MINE, dst: VIP }),
      },
    ],
  },
  {
    name: "fragment tracking (the fragment queue), with a tier",
    decider: () => withFragments(true),
    steps: [
      {
        description: "first fragment: the datagram's 5-tuple target, remembered",
        packet: later1[0],
        expect: {
          verdict: "accept",
          reason: "fragment-first",
          key: datagram(4000),
          lb: "web",
          fragment: "first",
        },
      },
      {
        description: "its later fragment follows it",
        packet: later1[1],
        expect: {
          verdict: "accept",
          reason: "fragment-forwarded",
          sameAs: "first",
          lb: "web",
          fragment: "forwarded",
        },
      },
      {
        description: "a later fragment before its first: held, the original dropped",
        packet: later2[2],
        expect: { verdict: "drop", reason: "fragment-held", lb: "web", fragment: "held" },
      },
      {
        description: "then its first: completes the datagram",
        packet: later2[0],
        expect: {
          verdict: "accept",
          reason: "fragment-first",
          key: datagram(4001),
          lb: "web",
          fragment: "first-completed",
        },
      },
      {
        description: "a duplicate first fragment keeps the datagram's target",
        packet: later2[0],
        expect: {
          verdict: "accept",
          reason: "fragment-first",
          key: datagram(4001),
          lb: "web",
          fragment: "first-duplicate",
        },
      },
      {
        description: "a later fragment copied in part cannot be held: dropped",
        packet: truncated[1],
        copied: 256,
        expect: { verdict: "drop", reason: "fragment-truncated", lb: "web", fragment: null },
      },
      {
        description: "a later fragment larger than the table holds: dropped, poisons its datagram",
        packet: big[1],
        expect: { verdict: "drop", reason: "fragment-dropped", lb: "web", fragment: "too-big" },
      },
      {
        description: "the rest of a poisoned datagram: dropped at once",
        packet: big[2],
        expect: { verdict: "drop", reason: "fragment-dropped", lb: "web", fragment: "poisoned" },
      },
      {
        description: "a fragment of the other instance: handed over before the table is asked",
        packet: peers[2],
        expect: { verdict: "accept", reason: "tier", fwmark: 102, lb: null, fragment: null },
      },
      {
        description: "a fragment of this instance: the table",
        packet: mine[0],
        expect: {
          verdict: "accept",
          reason: "fragment-first",
          key: { ...datagram(4004), src: MINE },
          lb: "web",
          fragment: "first",
        },
      },
    ],
  },
];

// ---------------------------------------------------------------- running them

function check(step: Step, dec: Decider, d: Decision, firstMarks: Map<string, number>): void {
  const e = step.expect;
  const what = step.description;
  assert.equal(VERDICT_NAMES[d.verdict], e.verdict, `${what}: verdict`);
  assert.equal(REASON_NAMES[d.reason], e.reason, `${what}: reason`);
  if (e.lb !== undefined)
    assert.equal(d.lb === null ? null : d.lbName, e.lb, `${what}: load balancer`);
  if (e.flow !== undefined) {
    const name = d.flow < 0 ? null : dec.flows?.matcher.flows[d.flow].name;
    assert.equal(name, e.flow, `${what}: flow`);
  }
  if (e.fragment !== undefined) {
    const outcome = d.fragOutcome < 0 ? null : FRAG_OUTCOME_NAMES[d.fragOutcome];
    assert.equal(outcome, e.fragment, `${what}: fragment outcome`);
  }
  let mark = e.fwmark;
  if (e.key !== undefined) {
    const table = LBS.get(e.lb ?? "") as Lb;
    mark = targetOf(table, e.key);
    const wrong = wrongKeys(e.key).map((k) => targetOf(table, k));
    assert.ok(
      wrong.some((m) => m !== mark),
      `${what}: the fixture cannot tell its key from a wrong one; change its ports`,
    );
    if (e.notLike !== undefined) {
      assert.notEqual(
        targetOf(table, e.notLike),
        mark,
        `${what}: the outer header gives the same target; change the ports`,
      );
    }
    firstMarks.set("first", mark);
  }
  if (e.sameAs !== undefined) mark = firstMarks.get(e.sameAs);
  if (e.verdict === "accept") assert.equal(d.fwmark, mark, `${what}: fwmark`);
  else assert.equal(d.fwmark, 0, `${what}: no mark`);
}

describe("decide(): fixtures", () => {
  for (const s of SCENARIOS) {
    test(s.name, () => {
      const dec = s.decider();
      const info = new PacketInfo();
      const d = new Decision();
      const marks = new Map<string, number>();
      let now = 1000;
      for (const step of s.steps) {
        const len = step.copied ?? step.packet.length;
        classify(step.packet, 0, len, s.classify ?? plainOptions, info);
        dec.decide(info, step.packet, 0, len, step.packet.length, now++, d);
        check(step, dec, d, marks);
      }
    });
  }

  test("every reason appears in the fixtures", () => {
    const seen = new Set<string>();
    for (const s of SCENARIOS) for (const step of s.steps) seen.add(step.expect.reason);
    assert.deepEqual([...seen].sort(), [...REASON_NAMES].sort());
  });
});

describe("counters by reason", () => {
  // The counter each (reason, verdict) moves, stated here independently of counters.ts.
  const expected: Record<string, number | undefined> = {
    "balanced/accept": C.marked,
    "fragment-first/accept": C.marked,
    "fragment-forwarded/accept": C.marked,
    "invalid/drop": C.invalidDropped,
    "invalid/accept-unmarked": C.invalidAccepted,
    "tier/accept": C.tierForwarded,
    "no-flow/drop": C.noFlowDropped,
    "no-flow/accept": C.noFlowMarked,
    "no-target/drop": C.noTargetDropped,
    "no-target/accept": C.noTargetMarked,
    "fragment-truncated/drop": C.fragTruncated,
    "fragment-held/drop": undefined,
    "fragment-dropped/drop": undefined,
  };

  test("each fixture's decision moves exactly its counter, its target slot or its invalid reason", () => {
    for (const s of SCENARIOS) {
      const dec = s.decider();
      const info = new PacketInfo();
      const d = new Decision();
      for (const step of s.steps) {
        const len = step.copied ?? step.packet.length;
        classify(step.packet, 0, len, s.classify ?? plainOptions, info);
        dec.decide(info, step.packet, 0, len, step.packet.length, 0, d);
        const w = new Float64Array(C.perSlot + 16);
        countDecision(w, d, dec.own);
        const key = `${REASON_NAMES[d.reason]}/${VERDICT_NAMES[d.verdict]}`;
        assert.ok(key in expected, `${step.description}: unexpected ${key}`);
        const moved = [...w.keys()].filter((i) => w[i] !== 0);
        const want: number[] = [];
        const counter = expected[key];
        if (counter !== undefined) want.push(counter);
        if (d.reason === Reason.Invalid)
          want.push(C.invalidByReason + (d.invalid % INVALID_REASON_SLOTS));
        if (d.lb === dec.own && d.slot !== NO_SLOT) want.push(C.perSlot + d.slot);
        assert.deepEqual(
          moved,
          want.sort((a, b) => a - b),
          `${step.description}: ${key}`,
        );
        if (d.verdict === Verdict.Accept && d.slot !== NO_SLOT) {
          assert.equal(
            d.lb?.fwmarkBySlot[d.slot],
            d.fwmark,
            `${step.description}: slot of the mark`,
          );
        }
      }
    }
  });
});

describe("decideQuestion (nflb fwmark)", () => {
  const ask = (dec: Decider, q: Parameters<typeof decideQuestion>[1]) => {
    const info = new PacketInfo();
    const d = new Decision();
    decideQuestion(dec, q, plainOptions, info, d);
    return d;
  };

  test("answers as the packet would be decided: flows, address-only flows, no flow", () => {
    const dec = withFlows(false);
    const d = ask(dec, { proto: "tcp", src: CLIENT, sport: 1235, dst: VIP, dport: 80 });
    assert.equal(d.lbName, "api");
    assert.equal(d.fwmark, targetOf(API, to80()));
    const raw = ask(dec, { proto: "udp", src: CLIENT, sport: 5000, dst: VIP2, dport: 53 });
    assert.equal(raw.lbName, "raw");
    assert.equal(raw.fwmark, targetOf(RAW, { mode: "addresses", src: CLIENT, dst: VIP2 }));
    const none = ask(dec, { proto: "tcp", src: CLIENT, sport: 1, dst: "10.201.0.1", dport: 80 });
    assert.equal(none.reason, Reason.NoFlow);
  });

  test("ICMP is asked as an echo request", () => {
    const d = ask(withFlows(true), { proto: "icmp", src: CLIENT2, sport: 0, dst: VIP, dport: 0 });
    assert.equal(d.lbName, "api");
    assert.equal(d.fwmark, targetOf(API, { mode: "addresses", src: CLIENT2, dst: VIP }));
  });

  test("fragments: a later fragment follows its first; the tier hands the other instance's over", () => {
    const later = ask(withTier(), {
      proto: "udp",
      src: MINE,
      sport: 4000,
      dst: VIP,
      dport: 9000,
      fragment: "later",
    });
    assert.equal(later.reason, Reason.FragForwarded);
    assert.equal(later.fwmark, targetOf(WEB, { ...datagram(4000), src: MINE }));
    const handed = ask(withTier(), {
      proto: "udp",
      src: PEERS,
      sport: 4000,
      dst: VIP,
      dport: 9000,
      fragment: "later",
    });
    assert.equal(handed.reason, Reason.TierPeer);
    assert.equal(handed.fwmark, 102);
  });
});
