// nflb dashboard-url: where the URL comes from (the running endpoint's record, --listen,
// the default) and when it carries the token.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { HttpEndpoint } from "../../src/http/endpoint.js";
import { nflb } from "../helpers/cli.js";
import { FakeActions, FakeStatus } from "../helpers/dashboard.js";

const dir = mkdtempSync(join(tmpdir(), "nflb-dash-cli-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const env = {
  NFLB_RUN_DIR: join(dir, "run"),
  NFLB_HTTP_TOKEN_FILE: join(dir, "lib", "http-token"),
};
const run = (...args: string[]) => nflb(args, env);

describe("nflb dashboard-url", () => {
  test("has --help", () => {
    const r = run("dashboard-url", "--help");
    assert.equal(r.status, 0);
    assert.match(r.stdout, /--listen/);
    assert.match(run("--help").stdout, /\bdashboard-url\b/);
  });

  test("nothing running: the default loopback address, no token, and a note on stderr", () => {
    const r = run("dashboard-url");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "http://127.0.0.1:9473/\n");
    assert.match(r.stderr, /no running endpoint/);
  });

  test("--listen off loopback: the token is created (0600) and put in the URL; --json", () => {
    const r = run("dashboard-url", "--listen", "[fd00::5]:9000", "--json");
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.match(out.token, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(out, {
      url: `http://[fd00::5]:9000/?token=${out.token}`,
      origin: "http://[fd00::5]:9000",
      tokenRequired: true,
      token: out.token,
      tokenFile: env.NFLB_HTTP_TOKEN_FILE,
      running: false,
    });
    assert.equal(statSync(env.NFLB_HTTP_TOKEN_FILE).mode & 0o777, 0o600);
    const again = JSON.parse(run("dashboard-url", "--listen", "10.1.2.3:80", "--json").stdout);
    assert.equal(again.token, out.token, "the same token every time");
  });

  test("a running endpoint: its own address and port", async () => {
    process.env.NFLB_RUN_DIR = env.NFLB_RUN_DIR;
    const status = new FakeStatus();
    const endpoint = new HttpEndpoint({
      listen: { host: "127.0.0.1", port: 0 },
      source: status,
      actions: new FakeActions(status),
      log: { warning: () => {}, notice: () => {} },
    });
    await endpoint.start();
    try {
      const r = run("dashboard-url");
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${endpoint.origin}/\n`);
      assert.equal(r.stderr, "");
    } finally {
      await endpoint.close();
      delete process.env.NFLB_RUN_DIR;
    }
    assert.match(run("dashboard-url").stderr, /no running endpoint/, "the record went with it");
  });

  test("a bad --listen is a one-line error", () => {
    const r = run("dashboard-url", "--listen", "web.example:80");
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      'nflb: --listen: invalid listen address "web.example:80": the host must be an IP address or localhost\n',
    );
  });
});
