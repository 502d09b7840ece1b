// The endpoint bound off loopback, for real: a server process in one network namespace
// listens on a veth address (IPv4 and IPv6) that exists only there; clients, a headless
// Chromium among them, run in a second namespace. Every request without the token is
// refused; the URL of `nflb dashboard-url` opens the page, whose live stream and actions
// then work through the cookie. Nothing is bound or routed in the root namespace.
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Browser } from "playwright-core";
import { CLI } from "../helpers/cli.js";
import { launchChromium, waitForUpdates } from "../helpers/dashboard.js";
import { isRoot, link, type Netns, Topology } from "../helpers/netns.js";

const SERVER = fileURLToPath(new URL("../helpers/dashboard-server.js", import.meta.url));

interface Reply {
  status: number;
  body: string;
  location: string | null;
}

/** One HTTP request from inside a namespace (node's fetch in a child process there). */
function httpFrom(
  ns: Netns,
  url: string,
  init: { method?: string; headers?: Record<string, string> } = {},
): Reply {
  const script = `
    const [url, init] = [process.argv[1], JSON.parse(process.argv[2])];
    const res = await fetch(url, { ...init, redirect: "manual", signal: AbortSignal.timeout(5000) });
    // The live stream never ends: its status is all we want.
    const body = res.headers.get("content-type")?.startsWith("text/event-stream") ? "" : await res.text();
    console.log(JSON.stringify({ status: res.status, body, location: res.headers.get("location") }));
    process.exit(0);`;
  const r = spawnSync(
    "ip",
    [
      "netns",
      "exec",
      ns.name,
      process.execPath,
      "--input-type=module",
      "-e",
      script,
      url,
      JSON.stringify(init),
    ],
    { encoding: "utf8", timeout: 15_000 },
  );
  if (r.status !== 0) throw new Error(`request ${url} from ${ns.name} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Reply;
}

describe("dashboard bound off loopback (network namespaces)", {
  skip: !isRoot() && "needs root",
}, () => {
  const topo = new Topology();
  const dir = mkdtempSync(join(tmpdir(), "nflb-dash-token-"));
  const env = {
    ...process.env,
    NFLB_HTTP_TOKEN_FILE: join(dir, "lib", "http-token"),
    NFLB_RUN_DIR: join(dir, "run"),
  };
  let srv: Netns;
  let cli: Netns;
  let server: ChildProcessWithoutNullStreams;
  const serverLines: string[] = [];
  let endpoints: Array<{ origin: string; url: string; tokenRequired: boolean }> = [];
  let browser: Browser | undefined;

  async function serverLine(match: (line: string) => boolean, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = serverLines.find(match);
      if (line) return line;
      if (Date.now() > deadline) throw new Error(`the server printed: ${serverLines.join(" | ")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  before(async () => {
    srv = topo.add("dsrv");
    cli = topo.add("dcli");
    link(srv, "veth0", ["10.77.0.1/24", "fd77::1/64"], cli, "veth0", [
      "10.77.0.2/24",
      "fd77::2/64",
    ]);
    server = srv.spawn(
      process.execPath,
      [SERVER, "10.77.0.1:9473", "[fd77::1]:9473", "127.0.0.1:9474"],
      {
        env,
        stdio: ["pipe", "pipe", "pipe"],
      },
    ) as ChildProcessWithoutNullStreams;
    createInterface({ input: server.stdout }).on("line", (line) => serverLines.push(line));
    server.stderr.on("data", (d: Buffer) => serverLines.push(`stderr: ${d.toString().trim()}`));
    endpoints = JSON.parse(await serverLine((l) => l.startsWith('{"endpoints"'), 15_000)).endpoints;
  });

  after(async () => {
    await browser?.close();
    if (server && server.exitCode === null) {
      server.kill("SIGTERM");
      await new Promise((r) => server.once("exit", r));
    }
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the token was made at first start, 0600; only the off-loopback endpoints need it", () => {
    assert.equal(statSync(env.NFLB_HTTP_TOKEN_FILE).mode & 0o777, 0o600);
    assert.deepEqual(
      endpoints.map((e) => [e.origin, e.tokenRequired]),
      [
        ["http://10.77.0.1:9473", true],
        ["http://[fd77::1]:9473", true],
        ["http://127.0.0.1:9474", false],
      ],
    );
    assert.match(endpoints[0].url, /^http:\/\/10\.77\.0\.1:9473\/\?token=[A-Za-z0-9_-]{43}$/);
  });

  test("every request without the token is refused with 401, over IPv4 and IPv6", () => {
    for (const origin of [endpoints[0].origin, endpoints[1].origin]) {
      for (const path of [
        "/",
        "/assets/app.js",
        "/api/status",
        "/api/history",
        "/api/events",
        "/metrics",
        "/healthz",
        "/readyz",
      ]) {
        assert.equal(httpFrom(cli, `${origin}${path}`).status, 401, `${origin}${path}`);
      }
      const act = httpFrom(cli, `${origin}/api/targets/web/1/disable`, {
        method: "POST",
        headers: { "x-nflb-action": "1" },
      });
      assert.equal(act.status, 401);
      const wrong = httpFrom(cli, `${origin}/api/status`, {
        headers: { authorization: "Bearer not-the-token-000" },
      });
      assert.deepEqual([wrong.status, wrong.body], [401, "wrong token\n"]);
    }
    assert.ok(!serverLines.some((l) => l.startsWith('{"action"')), "no action got through");
  });

  test("with the token: Prometheus' bearer reads /metrics, curl acts with the header", async () => {
    const token = new URL(endpoints[0].url).searchParams.get("token") ?? "";
    const auth = { authorization: `Bearer ${token}` };
    const metrics = httpFrom(cli, `${endpoints[1].origin}/metrics`, { headers: auth });
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /^nflb_http_requests_total\{route="metrics",code="401"\} \d+$/m);
    const act = httpFrom(cli, `${endpoints[0].origin}/api/targets/api/12/disable`, {
      method: "POST",
      headers: { ...auth, "x-nflb-action": "1" },
    });
    assert.equal(act.status, 200, act.body);
    await serverLine((l) => l === '{"action":"disable","service":"api","fwmark":12}');
    const viaQuery = httpFrom(
      cli,
      `${endpoints[0].origin}/api/targets/api/12/enable?token=${token}`,
      {
        method: "POST",
        headers: { "x-nflb-action": "1" },
      },
    );
    assert.equal(viaQuery.status, 401, "a token in the URL never authorizes an action");
  });

  test("the loopback endpoint of the same process answers its own namespace without a token", () => {
    assert.equal(httpFrom(srv, "http://127.0.0.1:9474/api/status").status, 200);
  });

  test("in Chromium: without the token 401; the URL of nflb dashboard-url opens the live page and drains", async () => {
    const printed = spawnSync(
      "ip",
      ["netns", "exec", srv.name, process.execPath, CLI, "dashboard-url", "--json"],
      {
        encoding: "utf8",
        env,
      },
    );
    assert.equal(printed.status, 0, printed.stderr);
    const { url, running } = JSON.parse(printed.stdout);
    assert.equal(url, endpoints[0].url);
    assert.equal(running, true);

    // Chromium runs in the client namespace, through a wrapper playwright starts.
    const wrapper = join(dir, "chromium-in-netns");
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${cli.name} /usr/bin/chromium "$@"\n`);
    chmodSync(wrapper, 0o755);
    browser = await launchChromium(wrapper);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("pageerror", (err) => problems.push(err.message));

    const refused = await page.goto(`${endpoints[0].origin}/`);
    assert.equal(refused?.status(), 401);

    const opened = await page.goto(url);
    assert.equal(opened?.status(), 200);
    assert.equal(page.url(), `${endpoints[0].origin}/`, "the token left the address bar");
    await waitForUpdates(page, 3);
    assert.equal(await page.locator(".target").count(), 9);

    await page
      .locator('[data-key="web"] .target[data-fwmark="1"] button[data-action="drain"]')
      .click();
    await page.locator("#confirm-ok").click();
    await serverLine((l) => l === '{"action":"drain","service":"web","fwmark":1}');
    await page
      .locator('[data-key="web"] .target[data-fwmark="1"] [data-field="admin"]', {
        hasText: "drain",
      })
      .waitFor({ timeout: 2000 });
    assert.deepEqual(problems, []);
  });
});
