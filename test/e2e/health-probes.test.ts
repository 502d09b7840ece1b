// Each probe kind against real servers in target namespaces, run from the load balancer's
// namespace: verdicts, reasons and latencies for success, refused, timeout (blackhole),
// wrong status, body and reply mismatches, TLS, SNI, Host, source addresses and exec.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { ProbeOutcome } from "../../src/health/probe/index.js";
import {
  blackhole,
  CheckServer,
  HealthRunner,
  PORTS,
  selfSignedCert,
  unblackhole,
} from "../helpers/healthlab.js";
import { isRoot } from "../helpers/netns.js";
import { type LbTopology, lbTopology } from "../helpers/targets.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

const timing = {
  intervalMs: 2000,
  fastIntervalMs: 1000,
  timeoutMs: 400,
  rise: 2,
  fall: 3,
  jitter: 0,
};

/** Specs as JSON: a udp payload is text, turned into bytes by the runner. */
type JsonSpec = Record<string, unknown>;

const http = (over: JsonSpec = {}): JsonSpec => ({
  kind: "http",
  port: PORTS.http,
  method: "GET",
  path: "/",
  expectStatus: [[200, 399]],
  verify: false,
  ...timing,
  ...over,
});
const udp = (over: JsonSpec = {}): JsonSpec => ({
  kind: "udp",
  port: PORTS.udp,
  send: "ping",
  ...timing,
  ...over,
});

describe("health probes in namespaces", { skip }, () => {
  let t: LbTopology;
  let runner: HealthRunner;
  let cert: ReturnType<typeof selfSignedCert>;
  const servers: CheckServer[] = [];

  before(async () => {
    t = lbTopology();
    cert = selfSignedCert();
    // A second address on the load balancer, for the source address option.
    t.lb.exec("ip", ["addr", "add", "10.100.0.9/24", "dev", "eth0"]);
    for (const [i, ns] of t.targets.entries()) {
      const s = new CheckServer(ns, `t${i + 1}`, cert);
      await s.start();
      servers.push(s);
    }
    runner = await HealthRunner.start(t.lb);
  });

  after(async () => {
    await runner?.close();
    for (const s of servers) s.stop();
    t?.topo.destroy();
    cert?.cleanup();
  });

  function probe(n: number, spec: JsonSpec, v6 = false): Promise<ProbeOutcome> {
    const a = t.targetAddrs[n - 1];
    const target = { service: "web", fwmark: n, address: v6 ? a.v6 : a.v4 };
    return runner.request<ProbeOutcome>("probe", { target: { ...target, port: spec.port }, spec });
  }

  async function expect(
    p: Promise<ProbeOutcome>,
    ok: boolean,
    reason: string | RegExp,
  ): Promise<ProbeOutcome> {
    const r = await p;
    assert.equal(r.ok, ok, `verdict (reason ${r.reason})`);
    if (typeof reason === "string") assert.equal(r.reason, reason);
    else assert.match(r.reason, reason);
    return r;
  }

  test("tcp: connected over IPv4 and IPv6; a closed port is refused at once", async () => {
    const tcp = { kind: "tcp", port: PORTS.tcp, ...timing } as JsonSpec;
    await expect(probe(1, tcp), true, "connected");
    await expect(probe(1, tcp, true), true, "connected");
    const r = await expect(probe(1, { ...tcp, port: 7001 }), false, "connection refused");
    assert.ok(r.latencyMs < 100, `refused after ${r.latencyMs} ms`);
  });

  test("http: status ranges, body regex, Host header, method", async () => {
    await expect(probe(1, http({ expectBody: "^ok name=t1 " })), true, "status 200");
    const host = await runner.request<ProbeOutcome>("probe", {
      target: { service: "web", fwmark: 1, address: "10.100.0.21", port: PORTS.http },
      spec: http({ expectBody: "host=10\\.100\\.0\\.21:8080 " }),
    });
    assert.equal(host.ok, true, "default Host is the target's address and port");
    await expect(
      probe(1, http({ host: "www.example", expectBody: "host=www.example " })),
      true,
      "status 200",
    );
    await expect(
      probe(1, http({ host: "www.example", expectBody: "host=other" })),
      false,
      "body mismatch",
    );
    await expect(probe(2, http({ method: "HEAD" })), true, "status 200");
    await expect(probe(2, http({ expectBody: "method=GET" }), true), true, "status 200");
    await servers[2].control("status 500");
    try {
      await expect(probe(3, http()), false, "status 500");
      await expect(
        probe(
          3,
          http({
            expectStatus: [
              [200, 299],
              [500, 503],
            ],
          }),
        ),
        true,
        "status 500",
      );
    } finally {
      await servers[2].control("status 200");
    }
  });

  test("http: the body regex sees the first 64 KiB only", async () => {
    await expect(probe(1, http({ path: "/big", expectBody: "MATCH" })), false, "body mismatch");
    await expect(probe(1, http({ path: "/big", expectBody: "^x{65536}" })), true, "status 200");
  });

  test("https: no verification and no SNI by default; SNI when set; verification fails a self-signed certificate", async () => {
    const https = (over: JsonSpec) => http({ kind: "https", port: PORTS.https, ...over });
    await expect(probe(1, https({ expectBody: "sni=none " })), true, "status 200");
    await expect(
      probe(1, https({ sni: "health.test", expectBody: "sni=health.test " })),
      true,
      "status 200",
    );
    await expect(probe(1, https({ verify: true })), false, "tls: DEPTH_ZERO_SELF_SIGNED_CERT");
    await expect(probe(1, https({}), true), true, "status 200");
  });

  test("udp: a reply (matching if asked), a mismatch, and ICMP port unreachable at once", async () => {
    await expect(probe(1, udp()), true, "reply");
    await expect(probe(1, udp({ expect: "^pong t1$" }), true), true, "reply");
    await expect(probe(1, udp({ expect: "^nope" })), false, "reply mismatch");
    const r = await expect(probe(1, udp({ port: PORTS.udp + 1 })), false, "port unreachable");
    assert.ok(r.latencyMs < 100, `port unreachable after ${r.latencyMs} ms`);
  });

  test("a blackholed target times out: tcp, http, udp each after its timeout", async () => {
    blackhole(t.targets[2]);
    try {
      for (const spec of [{ kind: "tcp", port: PORTS.tcp, ...timing }, http(), udp()]) {
        const r = await expect(probe(3, spec), false, "timeout");
        assert.ok(
          r.latencyMs >= 395 && r.latencyMs < 700,
          `${spec.kind} timeout after ${r.latencyMs} ms`,
        );
      }
    } finally {
      unblackhole(t.targets[2]);
    }
    await expect(probe(3, http()), true, "status 200");
  });

  test("source address: probes leave from it; one not on the machine fails clearly", async () => {
    await expect(
      probe(1, http({ source: "10.100.0.9", expectBody: "peer=10\\.100\\.0\\.9 " })),
      true,
      "status 200",
    );
    await expect(probe(1, http({ expectBody: "peer=10\\.100\\.0\\.1 " })), true, "status 200");
    await expect(probe(1, udp({ source: "10.100.0.9" })), true, "reply");
    await expect(
      probe(1, { kind: "tcp", port: PORTS.tcp, source: "10.100.0.77", ...timing }),
      false,
      "source address not available",
    );
  });

  test("exec: runs in the load balancer's namespace with the target in its environment", async () => {
    const exec = (over: JsonSpec = {}): JsonSpec => ({
      kind: "exec",
      command: ["bash", "-c", 'exec 3<>"/dev/tcp/$NFLB_ADDRESS/$NFLB_PORT"'],
      ...timing,
      ...over,
    });
    const target = (port: number) => ({ service: "web", fwmark: 1, address: "10.100.0.21", port });
    const ok = await runner.request<ProbeOutcome>("probe", {
      target: target(PORTS.tcp),
      spec: exec(),
    });
    assert.deepEqual([ok.ok, ok.reason], [true, "exit 0"]);
    const refused = await runner.request<ProbeOutcome>("probe", {
      target: target(7001),
      spec: exec(),
    });
    assert.equal(refused.ok, false);
    assert.match(refused.reason, /^exit 1: .*Connection refused/);
  });
});
