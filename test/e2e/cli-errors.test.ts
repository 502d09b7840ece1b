// Bad input at the command line, in a real namespace: a clear one-line error, a non-zero
// exit, and no change to the rules, routes or state.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI } from "../helpers/cli.js";
import { nflbIn, tryNflbIn } from "../helpers/daemon.js";
import { isRoot, Netns } from "../helpers/netns.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

describe("bad input changes nothing", { skip }, () => {
  let lb: Netns;
  const stateDir = mkdtempSync(join(tmpdir(), "nflb-e2e-"));

  function snapshot(): string {
    return [
      lb.exec("nft", ["list", "ruleset"]),
      lb.exec("iptables-nft-save", []).replace(/^#.*$/gm, ""),
      lb.exec("ip", ["rule"]),
      lb.exec("ip", ["-6", "rule"]),
      lb.exec("ip", ["route", "show", "table", "all"]),
      readdirSync(stateDir).sort().join(","),
      tryNflbIn(lb, "show", "--name", "lb", "--json").stdout,
    ].join("\n---\n");
  }

  before(() => {
    process.env.NFLB_STATE_DIR = stateDir;
    // Readable by the unprivileged user of the "missing root" case.
    chmodSync(stateDir, 0o755);
    lb = Netns.create("lb");
    lb.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    // No IPv6 link-local addresses: their routes would appear while the test runs.
    lb.exec("ip", ["link", "set", "eth0", "addrgenmode", "none"]);
    lb.exec("ip", ["link", "set", "eth1", "addrgenmode", "none"]);
    lb.exec("ip", ["addr", "add", "10.100.0.1/24", "dev", "eth0"]);
    lb.exec("ip", ["link", "set", "eth0", "up"]);
    lb.exec("ip", ["link", "set", "eth1", "up"]);
    nflbIn(lb, "init", "--name", "lb");
    nflbIn(lb, "activate", "--name", "lb", "1", "2");
  });
  after(() => {
    lb?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const good = [
    "--name",
    "lb",
    "--vip",
    "10.200.0.1",
    "--target",
    "1=10.100.0.21",
    "--target",
    "2=10.100.0.22",
  ];
  const cases: [string, string[], RegExp][] = [
    [
      "bad CIDR",
      ["setup", "--mode", "nat", ...good.slice(0, 2), "--vip", "10.200.0.0/33", ...good.slice(4)],
      /10\.200\.0\.0\/33/,
    ],
    [
      "VIP with host bits",
      ["setup", "--mode", "nat", "--name", "lb", "--vip", "10.200.0.1/24", ...good.slice(4)],
      /host bits/,
    ],
    ["unknown mode", ["setup", "--mode", "magic", ...good], /mode/],
    ["bad target", ["setup", "--mode", "dsr", ...good, "--target", "3=10.100.0.999"], /address/],
    [
      "target off-link (dsr)",
      ["setup", "--mode", "dsr", ...good, "--target", "3=192.0.2.7"],
      /directly connected/,
    ],
    [
      "duplicate fwmark",
      ["setup", "--mode", "nat", ...good, "--target", "2=10.100.0.23"],
      /fwmark 2/,
    ],
    ["unknown fwmark", ["deactivate", "--name", "lb", "9"], /unknown fwmark 9/],
    ["fwmark out of range", ["activate", "--name", "lb", "4294967296"], /fwmark/],
    ["M out of range", ["init", "--name", "other", "--M", "2"], /table size/i],
    ["M too large", ["init", "--name", "other", "--M", "2000003"], /table size/i],
    ["bad queue", ["lb", "--name", "lb", "--queue", "70000"], /queue/],
    [
      "daemon without state",
      ["lb", "--name", "nosuch", "--queue", "3"],
      /no load balancer named "nosuch"/,
    ],
  ];

  for (const [label, args, pattern] of cases) {
    test(label, () => {
      const before = snapshot();
      const r = tryNflbIn(lb, ...args);
      assert.notEqual(r.status, 0, `${label}: exit status`);
      assert.match(r.stderr, pattern);
      assert.match(r.stderr, /^nflb: /m);
      assert.ok(!/\n\s+at /.test(r.stderr), `${label}: stack trace printed:\n${r.stderr}`);
      assert.equal(snapshot(), before, `${label} changed something`);
    });
  }

  test("missing root: setup, teardown and lb refuse clearly", () => {
    const before = snapshot();
    for (const args of [
      ["setup", "--mode", "nat", ...good],
      ["teardown", "--name", "lb"],
      ["lb", "--name", "lb"],
    ]) {
      const r = lb.tryExec("setpriv", [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        process.execPath,
        CLI,
        ...args,
      ]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /needs root/, r.stderr);
    }
    assert.equal(snapshot(), before);
  });
});
