// Fuzz: over a million random and mutated packets (the real fixtures with bit flips,
// byte overwrites, truncation and random tails, plus pure random bytes), from a seeded
// PRNG so any failure reproduces. Nothing may throw and every result must be coherent.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type ClassifyOptions,
  classify,
  FragKind,
  flowHash,
  HashMode,
  InvalidReason,
  keyWordsFor,
  PacketInfo,
} from "../../src/packet/classify.js";
import { readPcap } from "../helpers/pcap.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const FIXTURES = join(ROOT, "test", "fixtures");
const ITERATIONS = 3_000_000;
const SEED = Number(process.env.FUZZ_SEED ?? 0x6e666c62);

// Hand-made seeds the captures lack (SCTP native and over UDP port 9899, an ICMP error
// quoting SCTP-over-UDP, a full chain of IPv6 extension headers), as hex.
const EXTRA_SEEDS = [
  // IPv4 SCTP INIT 5000 -> 5001: common header, INIT chunk (tag, a_rwnd, streams, TSN)
  "4500003400004000408400000a0000010a000002" +
    "138813890000000000000000" +
    "01000014112233440001000000" +
    "0a000a00000001",
  // IPv4 UDP 40000 -> 9899 carrying SCTP DATA 5000 -> 5001
  "4500002c00004000401100000a0000010a000002" + "9c4026ab00180000" + "13881389abcdef0100000000",
  // IPv4 ICMP frag-needed quoting UDP 9899 -> 40000 / SCTP 5001 -> 5000
  "4500004800004000400100000a0000090a000001" +
    "0304000000000500" +
    "4500002c00004000401100000a0000010a000002" +
    "26ab9c4000180000" +
    "13891388abcdef0100000000",
  // IPv6 with the maximum 8 destination-options headers, then UDP 1 -> 2
  `60000000004c3c40${"fd000000000000000000000000000001"}${"fd000000000000000000000000000002"}${"3c00010400000000".repeat(7)}1100010400000000` +
    "0001000200080000",
];

function hex(s: string): Uint8Array {
  assert.equal(s.length % 2, 0, s);
  return Uint8Array.from(s.match(/../g) ?? [], (h) => Number.parseInt(h, 16));
}

const VALID_REASONS = new Set<number>(Object.values(InvalidReason));

test(`fuzz: ${ITERATIONS} random and mutated packets, no throw, coherent results`, (t) => {
  const seeds: Uint8Array[] = [];
  for (const f of readdirSync(FIXTURES).filter((n) => n.endsWith(".pcap"))) {
    for (const p of readPcap(readFileSync(join(FIXTURES, f)))) if (p.ip) seeds.push(p.ip);
  }
  for (const h of EXTRA_SEEDS) seeds.push(hex(h));
  assert.ok(seeds.length > 60);

  const optsList: ClassifyOptions[] = [
    { sctpPortsOnly: true, sctpEncapPort: 0 },
    { sctpPortsOnly: true, sctpEncapPort: 9899 },
    { sctpPortsOnly: false, sctpEncapPort: 9899 },
  ];
  const work = new Uint8Array(4096);
  const info = new PacketInfo();
  let s = SEED >>> 0 || 1;
  // xorshift32: deterministic, allocation-free.
  const rnd = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const reasons = new Array<number>(16).fill(0);
  const modes = [0, 0, 0];
  const frags = [0, 0, 0];
  let icmpErrors = 0;
  let encap = 0;
  const started = performance.now();
  for (let n = 0; n < ITERATIONS; n++) {
    const kind = rnd() % 10;
    let off = rnd() % 64;
    let len: number;
    if (kind < 7) {
      // Mutated real packet: copy (usually the first 256 bytes, as a copy range would).
      const src = seeds[rnd() % seeds.length];
      len = rnd() % 4 === 0 ? src.length : Math.min(src.length, 256);
      work.set(src.subarray(0, len), off);
      const flips = rnd() % 6;
      for (let k = 0; k < flips; k++) {
        // Most mutations hit the headers, where the parser's decisions are.
        const at = off + (rnd() % Math.min(len || 1, rnd() % 2 ? 96 : len || 1));
        if (rnd() % 2) work[at] ^= 1 << (rnd() % 8);
        else work[at] = rnd() & 0xff;
      }
      const cut = rnd() % 4;
      if (cut === 0) len = rnd() % (len + 1);
      else if (cut === 1) {
        // Random tail past the packet.
        const extra = rnd() % 64;
        for (let k = 0; k < extra; k++) work[off + len + k] = rnd() & 0xff;
        len += extra;
      }
    } else {
      // Pure random bytes; mostly with a plausible version nibble to get past the first check.
      len = rnd() % 200;
      for (let k = 0; k < len; k++) work[off + k] = rnd() & 0xff;
      const v = rnd() % 4;
      if (len > 0 && v < 3) work[off] = (v === 0 ? 0x40 : 0x60) | (work[off] & 0x0f);
      if (len > 0 && v === 1) work[off] = 0x45;
    }
    if (rnd() % 1000 === 0) off = -1 - (rnd() % 4); // out of bounds on purpose
    const opts = optsList[n % 3];
    let r: number;
    try {
      r = classify(work, off, len, opts, info);
    } catch (err) {
      assert.fail(`iteration ${n} (seed ${SEED}): threw ${String(err)}`);
    }
    if (r !== info.invalid || !VALID_REASONS.has(r)) {
      assert.fail(`iteration ${n}: return ${r}, invalid ${info.invalid}`);
    }
    reasons[r]++;
    if (r !== 0) continue;
    const fam = info.family;
    if (fam !== 4 && fam !== 6) assert.fail(`iteration ${n}: family ${fam}`);
    const mode = info.hashMode;
    if (mode !== HashMode.FiveTuple && mode !== HashMode.Addresses && mode !== HashMode.Ports) {
      assert.fail(`iteration ${n}: hash mode ${mode}`);
    }
    if (info.keyWords !== keyWordsFor(mode, fam)) {
      assert.fail(`iteration ${n}: ${info.keyWords} key words for mode ${mode} family ${fam}`);
    }
    if (
      info.fragKind !== FragKind.None &&
      info.fragKind !== FragKind.First &&
      info.fragKind !== FragKind.Later
    ) {
      assert.fail(`iteration ${n}: frag kind ${info.fragKind}`);
    }
    if (info.fragKind === FragKind.Later && (mode !== HashMode.Addresses || info.sport !== 0)) {
      assert.fail(`iteration ${n}: later fragment with ports`);
    }
    if (!(info.sport >= 0 && info.sport <= 0xffff && info.dport >= 0 && info.dport <= 0xffff)) {
      assert.fail(`iteration ${n}: ports ${info.sport} ${info.dport}`);
    }
    if (info.proto < 0 || info.proto > 255) assert.fail(`iteration ${n}: proto ${info.proto}`);
    const h = flowHash(info, n);
    if (!(h >= 0 && h <= 0xffffffff && Number.isInteger(h)))
      assert.fail(`iteration ${n}: hash ${h}`);
    modes[mode]++;
    frags[info.fragKind]++;
    if (info.icmpError) icmpErrors++;
    if (info.sctpEncap) encap++;
  }
  const ms = performance.now() - started;
  // The mutations must reach the deep paths, or the fuzz proves little.
  assert.ok(reasons[0] > ITERATIONS / 10, `valid ${reasons[0]}`);
  // (5, too many extension headers, needs one exact byte: the hand-built tests cover it.)
  for (const r of [1, 2, 3, 4, 6, 7, 8, 9]) assert.ok(reasons[r] > 0, `reason ${r} never seen`);
  assert.ok(
    modes.every((m) => m > 0),
    `modes ${modes}`,
  );
  assert.ok(
    frags.every((m) => m > 0),
    `frags ${frags}`,
  );
  assert.ok(
    icmpErrors > 0 && encap > ITERATIONS / 1000,
    `icmp errors ${icmpErrors}, encap ${encap}`,
  );
  t.diagnostic(
    `fuzz: ${ITERATIONS} packets in ${(ms / 1000).toFixed(2)} s; reasons ${reasons.slice(0, VALID_REASONS.size).join("/")}; modes ${modes.join("/")}; frags ${frags.join("/")}; icmp errors ${icmpErrors}; sctp/udp ${encap}`,
  );
});
