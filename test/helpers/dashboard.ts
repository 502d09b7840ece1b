// A fake running service for the HTTP endpoint and dashboard tests: a realistic status
// (three services, queues, flows, BGP, events) whose counters grow with time at each
// target's rate, actions that change its admin states, history seeded with 15 minutes of
// traffic, and a headless Chromium from Debian.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import type { TargetActions } from "../../src/http/endpoint.js";
import type { TargetHistoryRing } from "../../src/http/history.js";
import type {
  AdminState,
  ServiceStatus,
  StatusSnapshot,
  TargetStatus,
} from "../../src/service/status.js";

const iso = (ms: number) => new Date(ms).toISOString();

function target(
  fwmark: number,
  address: string,
  share: number,
  startedAt: number,
  extra: Partial<TargetStatus> = {},
): TargetStatus {
  return {
    fwmark,
    address,
    weight: 100,
    admin: "enabled",
    health: "up",
    healthSince: iso(startedAt),
    lastCheck: { ok: true, latencyMs: 0.8, reason: "ok", at: iso(startedAt) },
    transitions: 1,
    inTable: true,
    entries: Math.round(share * 65537),
    share,
    packets: 0,
    bytes: 0,
    ...extra,
  };
}

/** Three services as an operator would run them: one target down, one draining. */
export function realisticStatus(now: number): StatusSnapshot {
  const startedAt = now - 3 * 3600_000 - 17 * 60_000;
  const web: ServiceStatus = {
    name: "web",
    mode: "nat",
    dataplane: "queue",
    vips: [
      { prefix: "10.200.0.1/32", announced: true, since: iso(startedAt + 9000), reason: "served" },
      {
        prefix: "fd00:200::1/128",
        announced: true,
        since: iso(startedAt + 9000),
        reason: "served",
      },
    ],
    ready: true,
    warm: true,
    tableSize: 65537,
    generation: 14,
    targets: [
      target(1, "10.100.0.21", 0.3334, startedAt),
      target(2, "10.100.0.22", 0.3333, startedAt),
      target(3, "10.100.0.23", 0.3333, startedAt),
    ],
    queues: [
      {
        queue: 0,
        running: true,
        packets: 0,
        drops: { "no-target": 0, invalid: 3 },
        kernel: { waiting: 0, queueDropped: 0, userDropped: 0 },
      },
      {
        queue: 1,
        running: true,
        packets: 0,
        drops: { "no-target": 0, invalid: 1 },
        kernel: { waiting: 2, queueDropped: 0, userDropped: 12 },
      },
    ],
  };
  const api: ServiceStatus = {
    name: "api",
    mode: "dsr",
    dataplane: "kernel",
    vips: [
      { prefix: "10.200.0.2/32", announced: true, since: iso(startedAt + 9000), reason: "served" },
    ],
    ready: true,
    warm: true,
    tableSize: 65537,
    generation: 9,
    targets: [
      target(11, "10.100.1.11", 0.6667, startedAt, { weight: 200 }),
      target(12, "10.100.1.12", 0.3333, startedAt),
      target(13, "10.100.1.13", 0, startedAt, { admin: "drain", inTable: false, entries: 0 }),
    ],
    queues: [],
  };
  const dns: ServiceStatus = {
    name: "dns",
    mode: "nat",
    dataplane: "queue",
    vips: [
      { prefix: "10.200.0.53/32", announced: true, since: iso(startedAt + 9000), reason: "served" },
    ],
    ready: true,
    warm: true,
    tableSize: 997,
    generation: 31,
    targets: [
      target(21, "10.100.2.21", 0.5, startedAt),
      target(22, "10.100.2.22", 0, now - 95_000, {
        health: "down",
        healthSince: iso(now - 95_000),
        lastCheck: { ok: false, latencyMs: 2000, reason: "timeout", at: iso(now - 2000) },
        transitions: 4,
        inTable: false,
        entries: 0,
      }),
      target(23, "10.100.2.23", 0.5, startedAt),
    ],
    queues: [
      {
        queue: 2,
        running: true,
        packets: 0,
        drops: { "no-target": 0, invalid: 0 },
        kernel: { waiting: 0, queueDropped: 0, userDropped: 0 },
      },
    ],
  };
  return {
    at: iso(now),
    version: "0.1.0",
    pid: 4242,
    startedAt: iso(startedAt),
    config: {
      file: "/etc/nflb/nflb.yaml",
      appliedAt: iso(now - 42 * 60_000),
      reloads: 3,
      reloadFailures: 1,
    },
    services: [web, api, dns],
    flows: [
      { name: "web", service: "web", priority: 10, match: "tcp 10.200.0.1/32 dport 80,443" },
      { name: "web6", service: "web", priority: 10, match: "tcp fd00:200::1/128 dport 80,443" },
      { name: "dns", service: "dns", priority: 0, match: "udp 10.200.0.53/32 dport 53" },
    ],
    bgp: {
      sessions: [
        { neighbor: "10.0.0.1 (AS 65000)", state: "Established", since: iso(startedAt + 5000) },
        { neighbor: "10.0.0.2 (AS 65000)", state: "Established", since: iso(startedAt + 5200) },
      ],
    },
    events: [
      { at: iso(startedAt), kind: "service", message: "nflb 0.1.0 started, 3 services" },
      { at: iso(startedAt + 9000), kind: "bgp", message: "announced 4 VIPs to 2 neighbors" },
      {
        at: iso(now - 42 * 60_000),
        kind: "config",
        message: "reloaded /etc/nflb/nflb.yaml: api target 11 weight 100 -> 200",
      },
      { at: iso(now - 42 * 60_000), kind: "table", service: "api", message: "table generation 9" },
      {
        at: iso(now - 20 * 60_000),
        kind: "config",
        message: "reload refused: nflb.yaml:31:9 services.dns.targets[2].weight: expected 0..65535",
      },
      {
        at: iso(now - 6 * 60_000),
        kind: "admin",
        service: "api",
        message: "target 13 (10.100.1.13) drain (dashboard)",
      },
      {
        at: iso(now - 95_000),
        kind: "health",
        service: "dns",
        message: "target 22 (10.100.2.22) up -> down: timeout (3 of 3 checks failed)",
      },
      { at: iso(now - 95_000), kind: "table", service: "dns", message: "table generation 31" },
    ],
  };
}

/** Packets per second a target gets at a time: a daily-ish wave, zero when out of the table. */
export function targetRate(service: string, t: TargetStatus, ms: number): number {
  if (t.health === "down" || t.admin === "disabled") return 0;
  const base = service === "web" ? 42_000 : service === "api" ? 9_000 : 2_500;
  const wave =
    1 + 0.25 * Math.sin(ms / 120_000 + t.fwmark) + 0.08 * Math.sin(ms / 9_000 + t.fwmark);
  const drain = t.admin === "drain" ? 0.15 : 1;
  return base * (t.share || 0.3) * 3 * wave * drain;
}

const BYTES_PER_PACKET: Record<string, number> = { web: 820, api: 1300, dns: 90 };

/** A status source whose counters grow with the clock it is given. */
export class FakeStatus {
  readonly status: StatusSnapshot;
  private lastMs: number;

  constructor(
    public clock: () => number = Date.now,
    status?: StatusSnapshot,
  ) {
    this.lastMs = clock();
    this.status = status ?? realisticStatus(this.lastMs);
  }

  /** Moves every counter to the time `ms`. */
  advanceTo(ms: number): void {
    const seconds = Math.max(0, (ms - this.lastMs) / 1000);
    for (const s of this.status.services) {
      let servicePackets = 0;
      for (const t of s.targets) {
        const packets = Math.round(targetRate(s.name, t, ms) * seconds);
        t.packets += packets;
        t.bytes += packets * (BYTES_PER_PACKET[s.name] ?? 500);
        servicePackets += packets;
      }
      for (const q of s.queues) q.packets += Math.round(servicePackets / s.queues.length);
    }
    this.lastMs = Math.max(this.lastMs, ms);
    this.status.at = iso(this.lastMs);
  }

  snapshot(): StatusSnapshot {
    this.advanceTo(this.clock());
    return structuredClone(this.status);
  }

  target(service: string, fwmark: number): TargetStatus {
    const t = this.status.services
      .find((s) => s.name === service)
      ?.targets.find((x) => x.fwmark === fwmark);
    if (!t) throw new Error(`no target ${service}/${fwmark}`);
    return t;
  }

  setHealth(service: string, fwmark: number, health: TargetStatus["health"], reason: string): void {
    const t = this.target(service, fwmark);
    const at = iso(this.clock());
    this.status.events.push({
      at,
      kind: "health",
      service,
      message: `target ${fwmark} (${t.address}) ${t.health} -> ${health}: ${reason}`,
    });
    t.health = health;
    t.healthSince = at;
    t.transitions += 1;
    t.inTable = health === "up" && t.admin !== "disabled";
    t.lastCheck = { ok: health === "up", latencyMs: 1, reason, at };
  }

  setAdmin(service: string, fwmark: number, admin: AdminState): void {
    const t = this.target(service, fwmark);
    t.admin = admin;
    t.inTable = admin !== "disabled" && t.health !== "down";
    this.status.events.push({
      at: iso(this.clock()),
      kind: "admin",
      service,
      message: `target ${fwmark} (${t.address}) ${admin}`,
    });
  }
}

/** Actions that record their calls and change the fake's admin states. */
export class FakeActions implements TargetActions {
  readonly calls: Array<{ action: string; service: string; fwmark: number }> = [];
  fail: string | undefined;

  constructor(private readonly status: FakeStatus) {}

  private act(action: string, admin: AdminState, service: string, fwmark: number): void {
    this.calls.push({ action, service, fwmark });
    if (this.fail) throw new Error(this.fail);
    this.status.setAdmin(service, fwmark, admin);
  }

  drain(service: string, fwmark: number): void {
    this.act("drain", "drain", service, fwmark);
  }
  disable(service: string, fwmark: number): void {
    this.act("disable", "disabled", service, fwmark);
  }
  enable(service: string, fwmark: number): void {
    this.act("enable", "enabled", service, fwmark);
  }
}

/**
 * Fills a history ring with `minutes` of one-second samples ending at `now`, as the
 * endpoint would have recorded them, without waiting that long. Returns the fake service
 * those samples came from, its counters at `now`, running on the real clock from then on.
 */
export function seedHistory(ring: TargetHistoryRing, now: number, minutes: number): FakeStatus {
  const start = now - minutes * 60_000;
  let t = start;
  const fake = new FakeStatus(() => t, realisticStatus(now));
  // The down target was up until it failed; the drained one took its share before.
  const down = fake.target("dns", 22);
  const drained = fake.target("api", 13);
  const failedAt = now - 95_000;
  const drainedAt = now - 6 * 60_000;
  down.health = "up";
  down.share = 0.3333;
  drained.admin = "enabled";
  drained.share = 0.25;
  for (; t <= now - 1000; t += 1000) {
    if (t >= failedAt) {
      down.health = "down";
      down.share = 0;
    }
    if (t >= drainedAt) {
      drained.admin = "drain";
      drained.share = 0;
    }
    fake.advanceTo(t);
    ring.record(fake.status, t);
  }
  fake.clock = Date.now;
  return fake;
}

/**
 * Debian's chromium, headless, in a fresh temporary profile (playwright makes one per
 * launch); no network of its own. `executablePath` may be a wrapper that starts it in a
 * network namespace.
 */
export async function launchChromium(executablePath = "/usr/bin/chromium"): Promise<Browser> {
  return chromium.launch({
    executablePath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A private token file path, removed by cleanup. */
export function tempTokenFile(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "nflb-http-"));
  return {
    path: join(dir, "lib", "http-token"),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Waits until the page has drawn `n` live updates (it counts them in body[data-updates]). */
export async function waitForUpdates(page: Page, n: number, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const updates = Number((await page.getAttribute("body", "data-updates")) ?? 0);
    if (updates >= n) return updates;
    if (Date.now() > deadline) throw new Error(`the page drew ${updates} of ${n} live updates`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
