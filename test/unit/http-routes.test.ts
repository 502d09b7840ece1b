// The HTTP endpoint's routes: the pure route table, then a real endpoint on 127.0.0.1 with
// a fake service, spoken to over node:http as browsers, curl and Prometheus would.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { Registry } from "prom-client";
import type { HistoryResponse, LiveUpdate } from "../../src/dashboard/page/protocol.js";
import { HttpEndpoint, type HttpEndpointOptions } from "../../src/http/endpoint.js";
import { matchRoute } from "../../src/http/routes.js";
import type { StatusSnapshot } from "../../src/service/status.js";
import { FakeActions, FakeStatus } from "../helpers/dashboard.js";

const quiet = { warning: () => {}, notice: () => {} };

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function request(
  origin: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string | Buffer,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${origin}${path}`, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        let raw = Buffer.concat(chunks);
        if (res.headers["content-encoding"] === "gzip") raw = gunzipSync(raw);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: raw.toString("utf8") });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Reads server-sent events until `count` arrived. */
function readEvents(origin: string, count: number, headers: Record<string, string> = {}) {
  return new Promise<Array<{ event: string; data: string; at: number }>>((resolve, reject) => {
    const events: Array<{ event: string; data: string; at: number }> = [];
    const req = httpRequest(`${origin}/api/events`, { headers }, (res) => {
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers["content-type"]), /^text\/event-stream/);
      let buffer = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let end = buffer.indexOf("\n\n");
        while (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data, at: Date.now() });
          if (events.length === count) {
            req.destroy();
            resolve(events);
            return;
          }
          end = buffer.indexOf("\n\n");
        }
      });
    });
    req.on("error", (err) => {
      if (events.length < count) reject(err);
    });
    req.end();
  });
}

const assets = new Set(["/", "/assets/app.js"]);

describe("route table", () => {
  test("reads are GET or HEAD", () => {
    assert.deepEqual(matchRoute("GET", "/api/status", assets), {
      ok: true,
      route: { kind: "status" },
    });
    assert.deepEqual(matchRoute("HEAD", "/", assets), {
      ok: true,
      route: { kind: "asset", path: "/" },
    });
    assert.deepEqual(matchRoute("POST", "/api/status", assets), {
      ok: false,
      status: 405,
      message: "POST is not allowed here",
      allow: "GET, HEAD",
    });
    assert.equal((matchRoute("GET", "/assets/nope.js", assets) as { status: number }).status, 404);
    assert.equal((matchRoute("GET", "/../etc/passwd", assets) as { status: number }).status, 404);
  });

  test("actions are POST /api/targets/SERVICE/FWMARK/ACTION", () => {
    assert.deepEqual(matchRoute("POST", "/api/targets/web/2/drain", assets), {
      ok: true,
      route: { kind: "action", service: "web", fwmark: 2, action: "drain" },
    });
    assert.deepEqual(matchRoute("POST", "/api/targets/my%2Dweb/4294967295/enable", assets), {
      ok: true,
      route: { kind: "action", service: "my-web", fwmark: 4294967295, action: "enable" },
    });
    const status = (m: ReturnType<typeof matchRoute>) => (m.ok ? 200 : m.status);
    assert.equal(status(matchRoute("GET", "/api/targets/web/2/drain", assets)), 405);
    assert.equal(status(matchRoute("POST", "/api/targets/web/2/delete", assets)), 404);
    assert.equal(status(matchRoute("POST", "/api/targets/web/2", assets)), 404);
    assert.equal(status(matchRoute("POST", "/api/targets/web/0/drain", assets)), 400);
    assert.equal(status(matchRoute("POST", "/api/targets/web/4294967296/drain", assets)), 400);
    assert.equal(status(matchRoute("POST", "/api/targets/web/0x10/drain", assets)), 400);
    assert.equal(status(matchRoute("POST", "/api/targets/we%ZZb/1/drain", assets)), 400);
    assert.equal(status(matchRoute("POST", "/api/targets/we%20b/1/drain", assets)), 400);
  });
});

describe("endpoint on loopback", () => {
  const status = new FakeStatus();
  const actions = new FakeActions(status);
  const runDir = mkdtempSync(join(tmpdir(), "nflb-run-"));
  const recordPath = join(runDir, "http.json");
  let endpoint: HttpEndpoint;
  let origin = "";
  before(async () => {
    endpoint = new HttpEndpoint({
      listen: { host: "127.0.0.1", port: 0 },
      source: status,
      actions,
      record: recordPath,
      tickMs: 200,
      maxLiveClients: 2,
      log: quiet,
    });
    await endpoint.start();
    origin = endpoint.origin;
  });
  after(async () => {
    await endpoint.close();
    rmSync(runDir, { recursive: true, force: true });
  });

  test("the record names the running endpoint", () => {
    const rec = JSON.parse(readFileSync(recordPath, "utf8"));
    assert.deepEqual(rec, {
      version: 1,
      origin,
      host: "127.0.0.1",
      port: endpoint.address.port,
      tokenRequired: false,
      pid: process.pid,
    });
    assert.equal(endpoint.url, `${origin}/`, "no token on loopback");
  });

  test("the page and its assets: types, gzip, ETag, security headers", async () => {
    const page = await request(origin, "GET", "/", { "accept-encoding": "gzip" });
    assert.equal(page.status, 200);
    assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(page.headers["content-encoding"], "gzip");
    assert.match(page.body, /<script type="module" src="\/assets\/app.js">/);
    assert.match(String(page.headers["content-security-policy"]), /default-src 'self'/);
    assert.equal(page.headers["x-frame-options"], "DENY");
    const js = await request(origin, "GET", "/assets/app.js");
    assert.equal(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(js.headers["content-encoding"], undefined);
    const again = await request(origin, "GET", "/assets/app.js", {
      "if-none-match": String(js.headers.etag),
    });
    assert.equal(again.status, 304);
    assert.equal((await request(origin, "GET", "/assets/uPlot.iife.min.js")).status, 200);
    assert.equal((await request(origin, "GET", "/assets/missing.js")).status, 404);
  });

  test("GET /api/status is the source's snapshot, fresh", async () => {
    const r = await request(origin, "GET", "/api/status");
    assert.equal(r.status, 200);
    assert.equal(r.headers["cache-control"], "no-store");
    const snap = JSON.parse(r.body) as StatusSnapshot;
    assert.deepEqual(
      snap.services.map((s) => s.name),
      ["web", "api", "dns"],
    );
    assert.ok(Math.abs(Date.parse(snap.at) - Date.now()) < 2000);
  });

  test("GET /api/history has every target's samples, fed by the ticks", async () => {
    await new Promise((r) => setTimeout(r, 700));
    const h = JSON.parse((await request(origin, "GET", "/api/history")).body) as HistoryResponse;
    assert.equal(h.windowMs, 15 * 60_000);
    assert.equal(h.targets.length, 9);
    const web1 = h.targets.find((t) => t.service === "web" && t.fwmark === 1);
    assert.ok(web1 && web1.samples.length >= 2, "a sample per tick");
    assert.ok(
      web1.samples.every((s) => s.pps > 1000),
      "the fake sends ~40 kpps to web 1",
    );
  });

  test("the live stream: the present at once, then an update per tick, each with samples", async () => {
    const events = await readEvents(origin, 3);
    const updates = events.map((e) => JSON.parse(e.data) as LiveUpdate);
    assert.ok(events.every((e) => e.event === "status"));
    assert.equal(updates[0].samples.length, 0, "the first one is sent on connect");
    assert.equal(updates[1].snapshot.services.length, 3);
    assert.equal(updates[2].samples.length, 9);
    assert.ok(events[2].at - events[0].at < 1500, "ticks every 200 ms here");
  });

  test("live clients are bounded: the one too many gets 503", async () => {
    const open: Array<ReturnType<typeof httpRequest>> = [];
    const connected = () =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${origin}/api/events`, (res) => {
          resolve(res.statusCode ?? 0);
          if (res.statusCode !== 200) res.resume();
        });
        req.on("error", reject);
        req.end();
        open.push(req);
      });
    assert.equal(await connected(), 200);
    assert.equal(await connected(), 200);
    assert.equal(endpoint.liveClients, 2);
    assert.equal(await connected(), 503);
    for (const req of open) req.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(endpoint.liveClients, 0, "closed clients leave the set");
  });

  test("a POST action calls the action interface and answers JSON", async () => {
    const r = await request(origin, "POST", "/api/targets/web/2/drain", {
      "x-nflb-action": "1",
      origin,
    });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { ok: true, action: "drain", service: "web", fwmark: 2 });
    assert.deepEqual(actions.calls.at(-1), { action: "drain", service: "web", fwmark: 2 });
    assert.equal(status.target("web", 2).admin, "drain");
    const undo = await request(origin, "POST", "/api/targets/web/2/enable", {
      "x-nflb-action": "1",
    });
    assert.equal(undo.status, 200);
    assert.equal(status.target("web", 2).admin, "enabled");
  });

  test("actions refused: unknown target 404, no header 403, other origin 403, GET 405, failure 500", async () => {
    const n = actions.calls.length;
    const h = { "x-nflb-action": "1" };
    assert.equal((await request(origin, "POST", "/api/targets/web/9/drain", h)).status, 404);
    assert.equal((await request(origin, "POST", "/api/targets/nope/1/drain", h)).status, 404);
    assert.equal((await request(origin, "POST", "/api/targets/web/1/drain")).status, 403);
    const cross = await request(origin, "POST", "/api/targets/web/1/drain", {
      ...h,
      origin: "http://evil.example",
    });
    assert.equal(cross.status, 403);
    // What a cross-site HTML form can send: no custom header, a simple content type.
    const form = await request(
      origin,
      "POST",
      "/api/targets/web/1/disable",
      { "content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "cross-site" },
      "a=b",
    );
    assert.equal(form.status, 403);
    const viaGet = await request(origin, "GET", "/api/targets/web/1/drain", h);
    assert.equal(viaGet.status, 405);
    assert.equal(viaGet.headers.allow, "POST");
    assert.equal(actions.calls.length, n, "none of these reached the actions");
    actions.fail = "state file locked";
    const failed = await request(origin, "POST", "/api/targets/web/1/disable", h);
    actions.fail = undefined;
    assert.equal(failed.status, 500);
    assert.deepEqual(JSON.parse(failed.body), { ok: false, error: "state file locked" });
  });

  test("a Host that is not loopback (DNS rebinding) is refused", async () => {
    const r = await request(origin, "GET", "/api/status", { host: "attacker.example:9473" });
    assert.equal(r.status, 403);
    const ok = await request(origin, "GET", "/api/status", { host: "localhost:1234" });
    assert.equal(ok.status, 200, "an SSH tunnel's localhost is fine");
  });

  test("bounded requests: a large body 413, a long URL 414, unknown paths 404", async () => {
    const big = await request(
      origin,
      "POST",
      "/api/targets/web/1/drain",
      { "x-nflb-action": "1", "content-type": "application/json" },
      Buffer.alloc(4096, 0x20),
    );
    assert.equal(big.status, 413);
    assert.equal((await request(origin, "GET", `/${"a".repeat(3000)}`)).status, 414);
    assert.equal((await request(origin, "GET", "/api/nothing")).status, 404);
  });

  test("/healthz, /readyz (every service ready) and /metrics (the endpoint's own registry)", async () => {
    const health = await request(origin, "GET", "/healthz");
    assert.deepEqual([health.status, health.body], [200, "alive\n"]);
    const ready = await request(origin, "GET", "/readyz");
    assert.deepEqual([ready.status, ready.body], [200, "ready\n"]);
    status.status.services[2].ready = false;
    const notReady = await request(origin, "GET", "/readyz");
    status.status.services[2].ready = true;
    assert.deepEqual([notReady.status, notReady.body], [503, "not ready: dns\n"]);
    const metrics = await request(origin, "GET", "/metrics");
    assert.equal(metrics.status, 200);
    assert.match(String(metrics.headers["content-type"]), /^text\/plain; version=0.0.4/);
    assert.match(metrics.body, /^nflb_http_requests_total\{route="status",code="200"\} \d+$/m);
    assert.match(metrics.body, /^nflb_http_live_clients \d+$/m);
  });
});

describe("endpoint with a token", () => {
  const status = new FakeStatus();
  const actions = new FakeActions(status);
  const registry = new Registry();
  let endpoint: HttpEndpoint;
  let origin = "";
  const TOKEN = "unit-test-token-0123456789";
  before(async () => {
    const options: HttpEndpointOptions = {
      listen: { host: "127.0.0.1", port: 0 },
      source: status,
      actions,
      requireToken: true,
      token: TOKEN,
      record: false,
      metrics: registry,
      healthz: () => ({ ok: false, detail: "workers stopped" }),
      readyz: async () => ({ ok: true, detail: "configuration applied" }),
      log: quiet,
    };
    registry.setDefaultLabels({ test: "yes" });
    endpoint = new HttpEndpoint(options);
    await endpoint.start();
    origin = endpoint.origin;
  });
  after(() => endpoint.close());

  test("every route without the token is 401, the page and /metrics included", async () => {
    for (const path of [
      "/",
      "/assets/app.js",
      "/api/status",
      "/api/history",
      "/api/events",
      "/metrics",
      "/healthz",
    ]) {
      const r = await request(origin, "GET", path);
      assert.equal(r.status, 401, path);
      assert.equal(r.headers["www-authenticate"], 'Bearer realm="nflb"');
    }
    const act = await request(origin, "POST", "/api/targets/web/1/drain", { "x-nflb-action": "1" });
    assert.equal(act.status, 401);
    assert.equal(actions.calls.length, 0);
  });

  test("the URL's token is traded for a SameSite=Strict HttpOnly cookie and taken out of the URL", async () => {
    assert.equal(endpoint.url, `${origin}/?token=${TOKEN}`);
    const r = await request(origin, "GET", `/?token=${TOKEN}`);
    assert.equal(r.status, 303);
    assert.equal(r.headers.location, "/");
    const cookie = String(r.headers["set-cookie"]);
    assert.match(cookie, new RegExp(`^nflb_token=${TOKEN}; Path=/; HttpOnly; SameSite=Strict$`));
    const page = await request(origin, "GET", "/", { cookie: `nflb_token=${TOKEN}` });
    assert.equal(page.status, 200);
    const act = await request(origin, "POST", "/api/targets/web/1/drain", {
      cookie: `nflb_token=${TOKEN}`,
      "x-nflb-action": "1",
    });
    assert.equal(act.status, 200);
  });

  test("Prometheus' bearer token reads the given metrics provider; the given probes answer", async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    const metrics = await request(origin, "GET", "/metrics", auth);
    assert.equal(metrics.status, 200);
    assert.equal(metrics.body, await registry.metrics());
    const health = await request(origin, "GET", "/healthz", auth);
    assert.deepEqual([health.status, health.body], [503, "workers stopped\n"]);
    const ready = await request(origin, "GET", "/readyz", auth);
    assert.deepEqual([ready.status, ready.body], [200, "configuration applied\n"]);
  });

  test("a wrong token is refused everywhere", async () => {
    const r = await request(origin, "GET", "/api/status", {
      authorization: "Bearer wrong-token-xx",
    });
    assert.deepEqual([r.status, r.body], [401, "wrong token\n"]);
  });
});

describe("endpoint edge cases", () => {
  test("a failing status source gives 503 on /api/status and /readyz, and the endpoint stays up", async () => {
    const endpoint = new HttpEndpoint({
      listen: { host: "127.0.0.1", port: 0 },
      source: {
        snapshot() {
          throw new Error("state unreadable");
        },
      },
      actions: new FakeActions(new FakeStatus()),
      record: false,
      log: quiet,
    });
    await endpoint.start();
    try {
      const r = await request(endpoint.origin, "GET", "/api/status");
      assert.deepEqual([r.status, JSON.parse(r.body)], [503, { error: "state unreadable" }]);
      const ready = await request(endpoint.origin, "GET", "/readyz");
      assert.equal(ready.status, 503);
      assert.equal((await request(endpoint.origin, "GET", "/healthz")).status, 200);
    } finally {
      await endpoint.close();
    }
  });

  test("IPv6 loopback works and needs no token; close removes the record", async () => {
    const runDir = mkdtempSync(join(tmpdir(), "nflb-run-"));
    const record = join(runDir, "http.json");
    const status = new FakeStatus();
    const endpoint = new HttpEndpoint({
      listen: { host: "::1", port: 0 },
      source: status,
      actions: new FakeActions(status),
      record,
      log: quiet,
    });
    await endpoint.start();
    try {
      assert.match(endpoint.origin, /^http:\/\/\[::1\]:\d+$/);
      assert.equal(endpoint.tokenRequired, false);
      assert.equal((await request(endpoint.origin, "GET", "/api/status")).status, 200);
      assert.ok(existsSync(record));
    } finally {
      await endpoint.close();
    }
    assert.equal(existsSync(record), false);
    rmSync(runDir, { recursive: true, force: true });
  });
});
