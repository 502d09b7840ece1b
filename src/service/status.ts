// What the running service (`nflb run`) knows about itself, as one snapshot: printed by
// `nflb status --json`, served at /api/status, turned into Prometheus metrics and drawn
// by the dashboard. Pure declarations: the one definition all of them read.
import type { Health } from "../health/spec.js";

export type AdminState = "enabled" | "disabled" | "drain";

export interface CheckResultStatus {
  ok: boolean;
  latencyMs: number;
  /** Short and human: "ok", "connection refused", "timeout", "status 500", "exit 1". */
  reason: string;
  /** ISO time of the result. */
  at: string;
}

export interface TargetStatus {
  fwmark: number;
  address: string;
  weight: number;
  admin: AdminState;
  health: Health;
  /** ISO time of the last health transition (or of the start, while unknown). */
  healthSince: string;
  lastCheck?: CheckResultStatus;
  /** Health transitions since the service started. */
  transitions: number;
  /** In the Maglev table now (active, admin-enabled, not down). */
  inTable: boolean;
  /** Entries of the Maglev table pointing at it, and their fraction of M. */
  entries: number;
  share: number;
  /** Cumulative packets and bytes sent to it (client -> target), from the rule counters. */
  packets: number;
  bytes: number;
}

export interface QueueStatus {
  queue: number;
  running: boolean;
  /** Packets the daemon gave a verdict. */
  packets: number;
  /** Daemon drops by reason ("no-target", "invalid", "no-flow", "fragment-...", ...). */
  drops: Record<string, number>;
  /** The kernel's counters of this queue (/proc/net/netfilter/nfnetlink_queue). */
  kernel?: { waiting: number; queueDropped: number; userDropped: number };
}

export interface VipStatus {
  /** Canonical CIDR, e.g. "10.200.0.1/32". */
  prefix: string;
  /** Announced over BGP now; undefined when BGP is not configured. */
  announced?: boolean;
  /** ISO time of the last announce/withdraw. */
  since?: string;
  /** Why it is (not) announced: "served", "no healthy target", "warming up", ... */
  reason?: string;
}

export interface ServiceStatus {
  name: string;
  mode: "nat" | "dsr" | "statistic";
  dataplane: "queue" | "kernel";
  vips: VipStatus[];
  /** Rules installed and at least one target up (what /readyz reports per service). */
  ready: boolean;
  /** Every target has its first health verdict (or the warm-up time is over). */
  warm: boolean;
  tableSize: number;
  /** Generation of the shared state's table. */
  generation: number;
  targets: TargetStatus[];
  queues: QueueStatus[];
}

export interface FlowStatus {
  name: string;
  service: string;
  priority: number;
  /** A one-line description of what it matches ("tcp 10.200.0.1/32 dport 80,443"). */
  match: string;
}

export interface BgpSessionStatus {
  neighbor: string;
  /** BIRD's state: "Established", "Active", "Connect", "Idle", ... */
  state: string;
  since?: string;
  lastError?: string;
}

export type EventKind = "health" | "admin" | "config" | "table" | "bgp" | "service";

export interface ServiceEvent {
  at: string;
  kind: EventKind;
  /** Service it is about, if any. */
  service?: string;
  /** One line, as logged. */
  message: string;
}

export interface StatusSnapshot {
  /** ISO time the snapshot was taken. */
  at: string;
  version: string;
  pid: number;
  startedAt: string;
  config: {
    file?: string;
    appliedAt?: string;
    reloads: number;
    reloadFailures: number;
    lastError?: string;
  };
  services: ServiceStatus[];
  flows: FlowStatus[];
  /** Absent when the configuration has no `bgp` part. */
  bgp?: { sessions: BgpSessionStatus[] };
  /** The most recent events, oldest first (bounded, e.g. 200). */
  events: ServiceEvent[];
}

/** One sample per second per target, for the dashboard's charts. */
export interface TargetSample {
  /** Epoch milliseconds. */
  t: number;
  /** Rates over the last second. */
  pps: number;
  bps: number;
}

/** One target's samples, oldest first: what GET /api/history serves per target. */
export interface TargetHistory {
  service: string;
  fwmark: number;
  samples: TargetSample[];
}
