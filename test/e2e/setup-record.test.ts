// nflb's records live in /run/nflb/netns-<inode>, and a new namespace may get the inode of
// one that is gone, with whatever that one left there. The records and builtin-chain
// claims carry the namespace's cookie (never reused): those of a dead namespace are
// ignored and removed, so they can neither make teardown remove what is not nflb's nor
// make setup treat a stranger's rules as its own.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { nflbIn } from "../helpers/daemon.js";
import { runDirOf, sweepNamespace, sweepStateDir } from "../helpers/killsweep.js";
import { isRoot, type Netns, Topology } from "../helpers/netns.js";
import { ruleSnapshot } from "../helpers/rulesnap.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

describe("records of a namespace that is gone", { skip }, () => {
  const topo = new Topology();
  const state = sweepStateDir();
  let ns: Netns;
  let dir: string;

  before(async () => {
    process.env.NFLB_STATE_DIR = state.dir;
    ns = await sweepNamespace(topo, "rec");
    dir = runDirOf(ns);
  });
  after(() => {
    topo.destroy();
    state.cleanup();
  });

  /** What a dead namespace with this inode could have left: a record and a claim. */
  function plantLeftovers(): void {
    const [inode, dev] = ns
      .exec("stat", ["-L", "-c", "%i %d", "/proc/self/ns/net"])
      .trim()
      .split(" ");
    mkdirSync(dir, { recursive: true });
    const netns = { inode: Number(inode), dev: Number(dev), cookie: "1" };
    const plan = {
      name: "web",
      mode: "dsr",
      family: 4,
      nftTable: "inet nflb_web",
      nft: "",
      nftChains: {},
      iptables: { binary: "iptables-nft", tables: [] },
      // A rule that, in this namespace, is somebody else's.
      ipItems: [{ kind: "rule", family: 4, fwmark: 7, table: 7, pref: 1000 }],
      targets: [],
    };
    writeFileSync(
      join(dir, "web.setup.json"),
      JSON.stringify({
        version: 1,
        name: "web",
        netns,
        state: "applied",
        spec: {},
        plans: [plan],
        updatedAt: "",
      }),
    );
    writeFileSync(
      join(dir, "iptables-builtin.json"),
      JSON.stringify({
        chains: [{ family: "ip", table: "mangle", chain: "PREROUTING" }],
        tables: [{ family: "ip", table: "mangle" }],
        netnsCookie: "1",
      }),
    );
  }

  test("teardown ignores them (and removes the files); setup does not take them for its own", () => {
    // Somebody else's: an ip rule, and an empty builtin chain iptables-nft left.
    ns.exec("ip", ["rule", "add", "pref", "1000", "fwmark", "7", "table", "7"]);
    ns.exec("iptables-nft", [
      "-t",
      "mangle",
      "-A",
      "PREROUTING",
      "-s",
      "192.0.2.1",
      "-j",
      "RETURN",
    ]);
    ns.exec("iptables-nft", [
      "-t",
      "mangle",
      "-D",
      "PREROUTING",
      "-s",
      "192.0.2.1",
      "-j",
      "RETURN",
    ]);
    const clean = ruleSnapshot(ns);
    plantLeftovers();

    assert.match(nflbIn(ns, "teardown", "--name", "web"), /nothing set up for "web"/);
    assert.equal(
      existsSync(dir),
      false,
      "the dead namespace's files (and so the directory) are gone",
    );
    assert.equal(ruleSnapshot(ns), clean);

    plantLeftovers();
    nflbIn(
      ns,
      "setup",
      "--name",
      "web",
      "--mode",
      "nat",
      "--vip",
      "10.200.0.1",
      "--target",
      "1=10.100.0.21",
    );
    assert.match(ruleSnapshot(ns), /fwmark 0x7 lookup 7/, "the foreign rule is still there");
    nflbIn(ns, "teardown", "--name", "web");
    // The empty mangle PREROUTING was not nflb's: it stays.
    assert.equal(ruleSnapshot(ns), clean);
  });
});
