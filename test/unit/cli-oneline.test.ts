// Small promises of the CLI (issue 9, item 5): every argument error is one line; numbers
// are checked against the range the help states; unknown commands fail, also with
// --help; `nflb delete` takes the counters of stopped daemons with the state.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, test } from "node:test";
import { C, countersPath, mapCounters } from "../../src/dataplane/counters.js";
import { nflb, tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
const env = { NFLB_STATE_DIR: dirs.dir };
const run = (...args: string[]) => nflb(args, env);
before(() => {
  process.env.NFLB_STATE_DIR = dirs.dir;
  assert.equal(run("init", "--name", "one").status, 0);
  assert.equal(run("activate", "--name", "one", "1").status, 0);
});
after(() => dirs.cleanup());

test("16 kinds of argument error: exactly one line 'nflb: ...', status 1", () => {
  const cases: [string, string[], RegExp][] = [
    ["unknown option", ["init", "--bogus"], /unknown option '--bogus'/],
    ["option without its value", ["init", "--M"], /option '--M <size>' argument missing/],
    ["integer option not a number", ["init", "--seed", "x"], /argument 'x' is invalid/],
    ["integer option out of range", ["lb", "--batch", "0"], /expected an integer 1\.\.1024/],
    ["bad fwmark option", ["init", "--name", "two", "--ownfw", "0"], /invalid fwmark "0"/],
    ["bad fwmark argument", ["activate", "--name", "one", "x"], /invalid fwmark "x"/],
    ["bad weight", ["activate", "--name", "one", "--weight", "70000", "1"], /invalid weight/],
    ["bad name", ["show", "--name", "a.b"], /invalid load balancer name "a\.b"/],
    ["missing argument", ["activate", "--name", "one"], /missing required argument 'fwmark'/],
    ["too many arguments", ["show", "--name", "one", "extra"], /too many arguments/],
    ["missing mandatory option", ["setup", "--vip", "10.0.0.1"], /required option '--mode/],
    ["unknown command", ["nosuch"], /unknown command 'nosuch'/],
    ["unknown subcommand", ["target", "off", "1"], /unknown command 'off'/],
    ["bad choice", ["lb", "--invalid", "maybe"], /expected drop or accept/],
    ["bad all-down policy", ["init", "--name", "two", "--all-down", "some"], /keep-last or none/],
    [
      "empty endpoint port",
      ["fwmark", "--name", "one", "--src", "10.0.0.1:", "--dst", "10.0.0.2:80"],
      /port after ":" is missing/,
    ],
  ];
  assert.equal(cases.length, 16);
  for (const [kind, args, pattern] of cases) {
    const r = run(...args);
    assert.equal(r.status, 1, `${kind}: status`);
    assert.match(r.stderr, /^nflb: [^\n]+\n$/, `${kind}: one line, got:\n${r.stderr}`);
    assert.match(r.stderr, pattern, kind);
    assert.equal(r.stdout, "", `${kind}: nothing on stdout`);
  }
});

test("--M and --N are checked against the range the help states", () => {
  const help = run("init", "--help").stdout;
  assert.match(help, /--M <size>\s+Maglev table size, a prime \(3\.\.1000003/);
  for (const m of ["2^40", "1099511627776", "2", "1000004"]) {
    const r = run("init", "--name", "big", "--M", m);
    assert.equal(r.status, 1, m);
    assert.match(r.stderr, /Maglev table size: expected an integer 3\.\.1000003/, m);
  }
  const n = run("init", "--name", "big", "--N", "0");
  assert.match(n.stderr, /number of targets: expected an integer 1\.\.10000/);
  assert.equal(existsSync(`${dirs.dir}/big`), false);
});

test("an unknown command fails, also with --help (and help for an unknown command)", () => {
  for (const args of [["run", "--help"], ["run"], ["help", "run"], ["target", "off", "--help"]]) {
    const r = run(...args);
    assert.equal(r.status, 1, args.join(" "));
    assert.match(r.stderr, /^nflb: unknown command '(run|off)' [^\n]*\n$/, args.join(" "));
    assert.equal(r.stdout, "", `${args.join(" ")}: no help printed`);
  }
  assert.equal(run("--help").status, 0);
  assert.equal(run("help", "init").status, 0);
  assert.equal(run("target", "--help").status, 0);
});

test("delete removes the counters files of stopped daemons, not those of a running one", () => {
  assert.equal(run("init", "--name", "ctr").status, 0);
  // Queue 0: a daemon that stopped; queue 1: a running one (this process).
  mapCounters("ctr", 0, 100)[C.running] = 0;
  mapCounters("ctr", 1, 100)[C.running] = 1;
  // Another load balancer's counters stay.
  mapCounters("one", 0, 100)[C.running] = 0;
  const r = run("delete", "--name", "ctr");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(existsSync(countersPath("ctr", 0)), false, "stopped daemon's counters removed");
  assert.equal(existsSync(countersPath("ctr", 1)), true, "running daemon's counters kept");
  assert.equal(existsSync(countersPath("one", 0)), true, "another load balancer's kept");
});
