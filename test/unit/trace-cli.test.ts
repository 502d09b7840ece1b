// The trace commands without a daemon: trace flows (stored, listed, deleted, rejected),
// the log level in the shared state, and `nflb trace` when nobody answers.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { nflb, tempStateDir } from "../helpers/cli.js";

const dirs = tempStateDir();
const runDir = mkdtempSync(join(tmpdir(), "nflb-run-"));
after(() => {
  dirs.cleanup();
  rmSync(runDir, { recursive: true, force: true });
});
const env = { NFLB_STATE_DIR: dirs.dir, NFLB_RUN_DIR: runDir };
const run = (...args: string[]) => nflb(args, env);

describe("trace commands", () => {
  test("every trace command has --help", () => {
    const top = run("--help");
    for (const c of [
      "loglevel",
      "trace",
      "trace-flow-set",
      "trace-flow-delete",
      "trace-flow-list",
      "trace-flow-list-names",
    ]) {
      assert.match(top.stdout, new RegExp(`\\b${c}\\b`), `--help mentions ${c}`);
      const r = run(c, "--help");
      assert.equal(r.status, 0, `${c} --help: ${r.stderr}`);
    }
  });

  test("trace flows: set, list without a target, replace, delete; the service flows stay apart", () => {
    let r = run("trace-flow-set", "--name", "web", "--protocols", "tcp", "--dports", "80,443");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "trace flow web (priority 0)\n");
    r = run("trace-flow-set", "--name", "all", "--prio", "-5");
    assert.equal(r.status, 0, r.stderr);
    const list = JSON.parse(run("trace-flow-list").stdout);
    assert.deepEqual(
      list.map((f: { name: string }) => f.name),
      ["web", "all"],
    );
    assert.deepEqual(list[0], {
      name: "web",
      priority: 0,
      protocols: ["tcp"],
      dsts: [],
      srcs: [],
      dports: ["80", "443"],
      sports: [],
      match: "",
      udpencap: 0,
    });
    assert.equal(run("trace-flow-list-names").stdout, "web\nall\n");
    assert.equal(JSON.parse(run("trace-flow-list", "--name", "all").stdout).priority, -5);
    assert.deepEqual(JSON.parse(run("flow-list").stdout), []);
    // Replace keeps one flow of that name.
    r = run("trace-flow-set", "--name", "web", "--protocols", "udp", "--dports", "53");
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(run("trace-flow-list", "--name", "web").stdout).dports, ["53"]);
    assert.equal(run("trace-flow-delete", "--name", "web").status, 0);
    assert.equal(run("trace-flow-list-names").stdout, "all\n");
    assert.equal(run("trace-flow-delete", "--name", "all").status, 0);
    assert.deepEqual(JSON.parse(run("trace-flow-list").stdout), []);
  });

  test("bad trace flows are refused with the reason and change nothing", () => {
    assert.equal(run("trace-flow-set", "--name", "keep", "--dsts", "10.0.0.0/8").status, 0);
    const before = run("trace-flow-list").stdout;
    const bad: [string[], RegExp][] = [
      [["--name", "x", "--dsts", "10.0.0.0/33"], /10\.0\.0\.0\/33/],
      [["--name", "x", "--dports", "80"], /need protocols/],
      [["--name", "bad name"], /name/],
      [["--name", "x", "--protocols", "tcp", "--match", "tcp[2:3] = 1"], /size 3/],
      [["--name", "x", "--target", "web"], /unknown option '--target'/],
    ];
    for (const [args, reason] of bad) {
      const r = run("trace-flow-set", ...args);
      assert.notEqual(r.status, 0, args.join(" "));
      assert.match(r.stderr, reason, args.join(" "));
    }
    const del = run("trace-flow-delete", "--name", "nope");
    assert.notEqual(del.status, 0);
    assert.match(del.stderr, /no trace flow named "nope"/);
    assert.match(run("trace-flow-list", "--name", "nope").stderr, /no trace flow named "nope"/);
    assert.equal(run("trace-flow-list").stdout, before);
    run("trace-flow-delete", "--name", "keep");
  });

  test("loglevel is state: read (notice when never set), set, refused when unknown", () => {
    assert.equal(run("loglevel", "--name", "lv").status, 1, "no such load balancer");
    assert.equal(run("init", "--name", "lv", "--M", "7", "--N", "2").status, 0);
    assert.equal(run("loglevel", "--name", "lv").stdout, "notice\n");
    assert.equal(run("loglevel", "--name", "lv", "debug").stdout, "log level debug\n");
    assert.equal(run("loglevel", "--name", "lv").stdout, "debug\n");
    const bad = run("loglevel", "--name", "lv", "verbose");
    assert.equal(bad.status, 1);
    assert.match(
      bad.stderr,
      /invalid log level "verbose": expected one of warning, notice, info, debug/,
    );
    assert.equal(run("loglevel", "--name", "lv").stdout, "debug\n");
  });

  test("nflb trace without a daemon, and bad selections", () => {
    const none = run("trace", "--name", "lv");
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no daemon answers on .*lv\.sock \(ENOENT\)/);
    assert.match(none.stderr, /nflb lb --name lv/);
    const cases: [string[], RegExp][] = [
      [["--selection", "packets"], /unknown trace selection "packets"/],
      [["--mask", "0x80"], /invalid trace mask/],
      [["--selection", "log", "--mask", "1"], /--selection or --mask, not both/],
      [["--tcp", "1.2.3.4:0"], /--tcp: invalid/],
      [["--tcp", "9000", "--socket", "/x"], /--tcp or --socket, not both/],
    ];
    for (const [args, reason] of cases) {
      const r = run("trace", "--name", "lv", ...args);
      assert.equal(r.status, 1, args.join(" "));
      assert.match(r.stderr, reason, args.join(" "));
    }
  });
});
