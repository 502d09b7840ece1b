import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, test } from "node:test";
import { nflb, tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
after(() => dirs.cleanup());
const env = { NFLB_STATE_DIR: dirs.dir };
const run = (...args: string[]) => nflb(args, env);

test("--help lists every command; each command has --help", () => {
  const r = run("--help");
  assert.equal(r.status, 0);
  for (const c of [
    "init",
    "delete",
    "activate",
    "deactivate",
    "target",
    "show",
    "lb",
    "fwmark",
    "stats",
    "setup",
    "teardown",
    "version",
    "flow-set",
    "flow-delete",
    "flow-list",
    "flow-list-names",
    "loglevel",
    "trace",
    "trace-flow-set",
    "trace-flow-delete",
    "trace-flow-list",
    "trace-flow-list-names",
  ]) {
    assert.match(r.stdout, new RegExp(`\\b${c}\\b`), `--help mentions ${c}`);
    const sub = run(c, "--help");
    assert.equal(sub.status, 0, `${c} --help: ${sub.stderr}`);
    assert.match(sub.stdout, /Usage: nflb/);
  }
});

test("version prints the package version", () => {
  const r = run("version");
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^nflb \d+\.\d+\.\d+\n$/);
});

test("init, activate, show --json, fwmark, deactivate: the whole cycle", () => {
  assert.equal(run("init", "--name", "cycle", "--M", "1009").status, 0);
  assert.equal(run("activate", "--name", "cycle", "1", "2", "3").status, 0);
  const shown = JSON.parse(run("show", "--name", "cycle", "--json").stdout);
  assert.equal(shown.M, 1009);
  assert.deepEqual(
    shown.targets.map((t: { fwmark: number; active: boolean }) => [t.fwmark, t.active]),
    [
      [1, true],
      [2, true],
      [3, true],
    ],
  );
  const total = shown.targets.reduce((n: number, t: { entries: number }) => n + t.entries, 0);
  assert.equal(total, 1009);

  // Many flows: record their targets, deactivate 2, only the flows of 2 move.
  const flows = Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}:${1000 + i}`);
  const before = flows.map((src) => {
    const r = run(
      "fwmark",
      "--name",
      "cycle",
      "--proto",
      "tcp",
      "--src",
      src,
      "--dst",
      "10.200.0.1:80",
    );
    assert.equal(r.status, 0, r.stderr);
    return Number(r.stdout.trim());
  });
  assert.ok(new Set(before).size === 3, "40 flows use all 3 targets");
  assert.equal(run("deactivate", "--name", "cycle", "2").status, 0);
  flows.forEach((src, i) => {
    const now = Number(
      run("fwmark", "--name", "cycle", "--src", src, "--dst", "10.200.0.1:80").stdout.trim(),
    );
    if (before[i] === 2) assert.notEqual(now, 2);
    else assert.equal(now, before[i], `flow ${src} kept its target`);
  });
});

test("bad input: clear error, non-zero exit, state unchanged", () => {
  assert.equal(run("init", "--name", "bad").status, 0);
  assert.equal(run("activate", "--name", "bad", "5").status, 0);
  const before = run("show", "--name", "bad", "--json").stdout;
  const cases: [string[], RegExp][] = [
    [["activate", "--name", "bad", "0"], /fwmark/],
    [["activate", "--name", "bad", "4294967296"], /fwmark/],
    [["activate", "--name", "bad", "abc"], /fwmark/],
    [["activate", "--name", "bad", "--weight", "0", "6"], /weight|integer/],
    [["deactivate", "--name", "bad", "7"], /unknown fwmark 7/],
    [["init", "--name", "bad", "--M", "1009"], /already exists/],
    [["init", "--name", "x2", "--M", "2"], /table size|prime|\[3/i],
    [["init", "--name", "x3", "--M", "99999999"], /table size|1000003|1,000,003/i],
    [["activate", "--name", "nosuch", "1"], /no load balancer named "nosuch"/],
    [
      ["fwmark", "--name", "bad", "--src", "10.0.0.300:1", "--dst", "10.0.0.1:80"],
      /invalid address/,
    ],
    [["fwmark", "--name", "bad", "--src", "10.0.0.1:1", "--dst", "fd00::1"], /same address family/],
    [
      ["fwmark", "--name", "bad", "--src", "[fd00::1]:", "--dst", "[fd00::2]:80"],
      /the port after ":" is missing/,
    ],
    [
      ["fwmark", "--name", "bad", "--src", "10.0.0.1:65536", "--dst", "10.0.0.2:80"],
      /invalid port/,
    ],
    [
      ["fwmark", "--name", "bad", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:80", "--fragment", "x"],
      /--fragment/,
    ],
    [
      ["setup", "--mode", "nat", "--vip", "10.0.0.0/33", "--target", "1=10.0.1.1", "--dry-run"],
      /10\.0\.0\.0\/33.*prefix length/,
    ],
    [
      ["setup", "--mode", "bogus", "--vip", "10.0.0.1", "--target", "1=10.0.1.1", "--dry-run"],
      /mode/,
    ],
    [
      ["setup", "--mode", "nat", "--vip", "10.0.0.1", "--target", "1=not-an-ip", "--dry-run"],
      /address/,
    ],
    [["lb", "--name", "bad", "--queue", "5:2"], /queue/],
    [["nosuchcommand"], /unknown command/],
    // One name pattern: init refuses what setup refuses (a.b used to be a valid init name).
    [["init", "--name", "a.b"], /invalid load balancer name "a\.b"/],
    [
      [
        "setup",
        "--name",
        "a.b",
        "--mode",
        "nat",
        "--vip",
        "10.0.0.1",
        "--target",
        "1=10.0.1.1",
        "--dry-run",
      ],
      /invalid load balancer name "a\.b"/,
    ],
    // An empty port is an error, not port 0.
    [
      ["fwmark", "--name", "bad", "--src", "1.2.3.4:", "--dst", "10.0.0.1:80"],
      /the port after ":" is missing/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const r = run(...args);
    assert.notEqual(r.status, 0, `${args.join(" ")} should fail`);
    assert.match(r.stderr, pattern, `${args.join(" ")}: ${r.stderr}`);
    assert.ok(!r.stderr.includes("    at "), `${args.join(" ")} printed a stack trace`);
  }
  assert.equal(run("show", "--name", "bad", "--json").stdout, before);
  assert.deepEqual(
    readdirSync(dirs.dir).filter((f) => f.startsWith("x")),
    [],
    "refused init left no file",
  );
});
