// The corruption matrix under a running daemon with traffic (NAT mode, three targets):
// each kind of damage is written into the live state file; the traffic keeps flowing
// exactly as before (the daemon keeps its last good table), the damage is counted once
// (nflb stats: stateDamage) and logged once; when the file verifies again the daemon says
// so. Then writers refuse the damaged state in one line, and `nflb init --force` repairs
// it under the running daemon, which reloads it.
import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { reciprocalScale } from "../../src/hash/jhash.js";
import { buildMaglevTable } from "../../src/maglev/maglev.js";
import { flowHash, infoFromTuple, PacketInfo } from "../../src/packet/index.js";
import {
  B,
  bufferOffset,
  H,
  STAMP_WORDS,
  type StateGeometry,
  tableStart,
} from "../../src/state/layout.js";
import type { Daemon } from "../helpers/daemon.js";
import { tryNflbIn } from "../helpers/daemon.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot } from "../helpers/netns.js";
import { type LbTopology, udpRequests } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const PORT = 8080;
const VIP = "10.200.0.1";
const NAME = "dmg";
const QUEUE = "6";
const G: StateGeometry = { tableSize: 1009, maxTargets: 8 };

/** Writes `bytes` at `offset` of the live file (same inode, as a stray write would). */
function writeAt(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, "r+");
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

function flipWord(path: string, offset: number): void {
  const cur = readFileSync(path).readUInt32LE(offset);
  const b = Buffer.alloc(4);
  b.writeUInt32LE((cur ^ 0x5a5a5a5a) >>> 0);
  writeAt(path, offset, b);
}

function randomTableBytes(path: string, buffer: number, count: number): void {
  const start = bufferOffset(G, buffer) + tableStart(G) * 4;
  for (let i = 0; i < count; i++) {
    writeAt(
      path,
      start + Math.floor(Math.random() * G.tableSize * 4),
      Buffer.from([Math.random() * 256]),
    );
  }
}

interface Case {
  what: string;
  damage: (path: string, active: number) => void;
  /** The daemon notices (counts and logs). */
  detected: boolean;
}

const header = (w: number, name: string): Case => ({
  what: `header ${name}`,
  damage: (p) => flipWord(p, w * 4),
  detected: w !== H.logLevel,
});
const stamp = (w: number, name: string): Case => ({
  what: `active stamp ${name}`,
  damage: (p, active) => flipWord(p, bufferOffset(G, active) + w * 4),
  detected: true,
});

// Every header and stamp word is damaged one by one in test/unit/state-damage.test.ts,
// through the same LbView the daemon uses; here, under traffic, every header field and a
// representative of each stamp check (the settings copies all go through one comparison).
const CASES: Case[] = [
  ...Object.entries(H).map(([name, w]) => header(w, name)),
  header(40, "reserved word 40"),
  stamp(B.magic, "magic"),
  stamp(B.generation, "generation"),
  stamp(B.targetsChecksum, "targetsChecksum"),
  stamp(B.tableChecksum, "tableChecksum"),
  stamp(B.hashSeed, "hashSeed copy"),
  stamp(B.allDownPolicy, "allDownPolicy"),
  {
    what: "active target slot 0 (fwmark)",
    damage: (p, active) => flipWord(p, bufferOffset(G, active) + STAMP_WORDS * 4),
    detected: true,
  },
  {
    what: "100 random bytes in the active table",
    damage: (p, active) => randomTableBytes(p, active, 100),
    detected: true,
  },
  {
    what: "100 random bytes in the inactive table",
    damage: (p, active) => randomTableBytes(p, 1 - active, 100),
    detected: false,
  },
  {
    what: "the whole file zeroed",
    damage: (p) => writeAt(p, 0, Buffer.alloc(readFileSync(p).length)),
    detected: true,
  },
];

describe("state damage under a running daemon with traffic", { skip }, () => {
  let f: LbFixture;
  let t: LbTopology;
  let daemon: Daemon;
  let path: string;
  let good: Buffer;
  const matrix: string[] = [];
  const COUNT = 40;
  const CLIENT = "10.100.1.10";
  let firstPort = 30000;

  /** What a table of targets 1, 2, 3 answers for the next COUNT flows (built here). */
  function predict(): string[] {
    const table = buildMaglevTable(
      [1, 2, 3].map((fwmark) => ({ fwmark, weight: 1 })),
      G.tableSize,
    );
    const info = new PacketInfo();
    const opts = { sctpPortsOnly: true, sctpEncapPort: 0 };
    return Array.from({ length: COUNT }, (_, i) => {
      infoFromTuple("udp", CLIENT, firstPort + i, VIP, PORT, opts, info);
      return `t${table[reciprocalScale(flowHash(info, 0), G.tableSize)]}`;
    });
  }

  /**
   * New flows each time (conntrack would carry a flow it has seen to its old target,
   * whatever the daemon marks): each must reach the target of the undamaged table.
   */
  async function assertTraffic(label: string): Promise<void> {
    const expected = predict();
    const answers = await udpRequests(t.client, {
      host: VIP,
      port: PORT,
      count: COUNT,
      firstPort,
      timeoutMs: 2000,
    });
    firstPort += COUNT;
    assert.deepEqual(answers, expected, `${label}: every new flow on its target`);
  }
  const stats = () => JSON.parse(f.nflb("stats", "--name", NAME, "--json"));
  const damageCount = (): number => stats().queues[0].stateDamage;
  const damageLines = () => (daemon.log().match(/is damaged \(/g) ?? []).length;
  const recoveryLines = () => (daemon.log().match(/verifies again/g) ?? []).length;

  async function until(what: string, ok: () => boolean, ms = 4000): Promise<void> {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${daemon.log()}`);
      await sleep(100);
    }
  }

  before(async () => {
    f = LbFixture.create();
    t = f.topology;
    await f.serveNames(PORT, (i) => [t.targetAddrs[i].v4]);
    f.nflb("init", "--name", NAME, "--M", String(G.tableSize), "--N", String(G.maxTargets));
    f.setup(NAME, "--mode", "nat", "--vip", VIP, "--queue", QUEUE, ...f.targetArgs("v4"));
    daemon = await f.daemon(NAME, QUEUE);
    path = join(f.stateDir, NAME);
    good = readFileSync(path);
    assert.deepEqual([...new Set(predict())].sort(), ["t1", "t2", "t3"]);
    await assertTraffic("before any damage");
  });

  after(async () => {
    if (matrix.length > 0) {
      process.stdout.write(
        `# corruption matrix under traffic\n${matrix.map((l) => `# ${l}`).join("\n")}\n`,
      );
    }
    await f?.close();
  });

  test("every kind of damage: traffic unchanged, counted and logged once, recovery said once", async () => {
    const generation = JSON.parse(f.nflb("show", "--name", NAME, "--json")).generation as number;
    const active = generation & 1;
    let expectedCount = 0;
    for (const c of CASES) {
      const linesBefore = damageLines();
      const recoveredBefore = recoveryLines();
      c.damage(path, active);
      if (c.detected) {
        expectedCount++;
        await until(`the damage of ${c.what} to be counted`, () => damageCount() === expectedCount);
      } else {
        await sleep(1100); // an audit (once a second) looked at it
      }
      await assertTraffic(c.what);
      writeAt(path, 0, good);
      if (c.detected) {
        await until(`${c.what}: recovery`, () => recoveryLines() > recoveredBefore);
      }
      assert.equal(damageCount(), expectedCount, `${c.what}: counted once`);
      assert.equal(damageLines(), linesBefore + (c.detected ? 1 : 0), `${c.what}: logged once`);
      assert.equal(
        recoveryLines(),
        recoveredBefore + (c.detected ? 1 : 0),
        `${c.what}: recovery said once`,
      );
      matrix.push(
        `${c.what}: ${c.detected ? "detected, counted 1, logged 1, recovery logged 1" : "not read (harmless)"}; ${COUNT}/${COUNT} new flows on their targets`,
      );
    }
    assert.ok(daemon.child.exitCode === null, "the daemon is still running");
  });

  test("a long damage episode (several audits, traffic all along) is counted and logged once", async () => {
    const count = damageCount();
    const lines = damageLines();
    randomTableBytes(
      path,
      JSON.parse(f.nflb("show", "--name", NAME, "--json")).generation & 1,
      100,
    );
    await until("the damage to be counted", () => damageCount() === count + 1);
    for (let i = 0; i < 3; i++) {
      await assertTraffic(`damaged, round ${i}`);
      await sleep(700);
    }
    assert.equal(damageCount(), count + 1, "one episode");
    assert.equal(damageLines(), lines + 1, "one log line");
    const recovered = recoveryLines();
    writeAt(path, 0, good);
    await until("recovery", () => recoveryLines() > recovered);
  });

  test("a writer refuses a damaged state in one line; init --force repairs it under the daemon", async () => {
    const countBefore = damageCount();
    randomTableBytes(
      path,
      JSON.parse(f.nflb("show", "--name", NAME, "--json")).generation & 1,
      100,
    );
    const refused = tryNflbIn(t.lb, "activate", "--name", NAME, "9");
    assert.notEqual(refused.status, 0);
    assert.match(
      refused.stderr,
      /^nflb: state of load balancer "dmg" .* is damaged: checksum mismatch in the table; "nflb init --force --name dmg" rebuilds it/,
    );
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    const shown = tryNflbIn(t.lb, "show", "--name", NAME);
    assert.notEqual(shown.status, 0);
    assert.match(shown.stderr, /is damaged/);
    await until("the damage to be counted", () => damageCount() > countBefore);

    const repaired = f.nflb("init", "--force", "--name", NAME);
    assert.match(
      repaired,
      /rebuilt .*: 3 targets from generation \d+ \(its table was damaged: rebuilt\)/,
    );
    await until("the daemon to reload the repaired file", () =>
      /was re-created; reloaded/.test(daemon.log()),
    );
    await assertTraffic("after the repair: same targets, same table");
    f.nflb("activate", "--name", NAME, "--weight", "2", "1");
    assert.equal(JSON.parse(f.nflb("show", "--name", NAME, "--json")).targets[0].weight, 2);
    assert.ok(daemon.child.exitCode === null, "the daemon is still running");
  });
});
