// Types of the BIRD driver beyond the configuration contract (spec.ts). Pure declarations.
import type { VipAnnouncement } from "./spec.js";

/**
 * What went wrong, as a kind the caller can act on:
 *   invalid   the spec or a VIP is not valid (a configuration mistake)
 *   missing   BIRD is not installed (no birdc / bird executable)
 *   down      BIRD is not running (control socket absent or refusing connections)
 *   denied    the control socket refuses this user
 *   refused   BIRD refuses the configuration (its message, one line)
 *   unwired   BIRD runs but does not include nflb's file (our protocols are absent)
 *   device    the announcement device cannot be created or is held by another process
 *   io        anything else (writing the include file, a timeout, an unexpected reply)
 */
export type BgpErrorKind =
  | "invalid"
  | "missing"
  | "down"
  | "denied"
  | "refused"
  | "unwired"
  | "device"
  | "io";

export class BgpError extends Error {
  override name = "BgpError";
  constructor(
    readonly kind: BgpErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** Facts about one service that decide whether its VIPs are announced (decide.ts). */
export interface ServiceFacts {
  /** The service's name (shown in reasons). */
  service: string;
  /** Its VIPs with their announcement attributes. */
  vips: readonly VipAnnouncement[];
  /** The service's rules are installed (setup applied and intact). */
  rulesInstalled: boolean;
  /** Its data plane runs: the daemon answers its queue, or the kernel map is in sync. */
  dataPlaneRunning: boolean;
  /**
   * Every target has its first health verdict (or the warm-up time is over). Until then
   * nothing is announced, whatever `healthy` says: announcing before the targets are
   * known black-holes traffic.
   */
  warm: boolean;
  /** Targets up now (health up, admin enabled). */
  healthy: number;
  /** Announce only with at least this many healthy targets (the config's min-healthy, default 1). */
  minHealthy: number;
}

export type DecisionCode =
  | "served"
  | "no-rules"
  | "no-dataplane"
  | "warming-up"
  | "too-few-healthy"
  | "stopped";

/** Whether to announce, and why, in words for `nflb status` and logs. */
export interface Decision {
  announce: boolean;
  code: DecisionCode;
  reason: string;
}

/** How the last attempt to hand the announcements to BIRD ended. */
export type BirdOutcome =
  | { ok: true }
  | { ok: false; kind: Exclude<BgpErrorKind, "invalid">; message: string };

/** One VIP as the announcer sees it (status snapshot). */
export interface VipState {
  /** Canonical CIDR. */
  prefix: string;
  /** Services carrying this VIP. */
  services: string[];
  /** Announced now: decided so, the device is held and BIRD took the configuration. */
  announced: boolean;
  /** The decision alone (what nflb wants, whatever BIRD does). */
  wanted: boolean;
  /** Why, in words ("served (2 of 3 targets healthy, min 1)", "warming up", ...). */
  reason: string;
  /** ISO time of the last change of `announced` (or of the first sight of the VIP). */
  since: string;
  /** Changes of `announced` since the announcer started. */
  transitions: number;
  communities: string[];
  med?: number;
}

/** One BGP session (a neighbour) as BIRD reports it. */
export interface SessionState {
  neighbor: string;
  asn: number;
  /** BIRD's protocol name for it (nflb_<address>). */
  protocol: string;
  /**
   * BIRD's BGP state: "Established", "Active", "Connect", "OpenSent", "OpenConfirm",
   * "Idle", "Down"; "Absent" when BIRD has no such protocol (the include is not loaded).
   */
  state: string;
  /** Established. */
  up: boolean;
  /** ISO time of the protocol's last state change, when BIRD's time format can be read. */
  since?: string;
  /** BIRD's own text for that time. */
  sinceText?: string;
  /** The last error BIRD recorded for the session ("Received: Administrative shutdown"). */
  lastError?: string;
  /** The BFD session's state ("Up", "Down", "Init", "AdminDown"), when BFD is on. */
  bfd?: string;
}

/** Everything the status page, metrics and `nflb status` show about BGP. */
export interface BgpStatus {
  /** ISO time of the snapshot. */
  at: string;
  /**
   * How the last hand-over to BIRD ended (ok: BIRD runs nflb's current file), or why BIRD
   * could not be asked just now (status()).
   */
  bird: BirdOutcome;
  /** The device that carries the announcements: held by this process, and up. */
  device: { name: string; held: boolean; up: boolean };
  /** The last configuration handed to BIRD: when, and how it ended. */
  lastApply?: { at: string; outcome: BirdOutcome; durationMs: number };
  sessions: SessionState[];
  vips: VipState[];
}
