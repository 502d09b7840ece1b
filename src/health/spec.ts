// What a health check is, after the config file has been validated and normalised
// (durations in milliseconds, defaults filled in). The config schema (src/config/)
// produces exactly this type; the checker (src/health/) consumes it. Pure declarations.

export type CheckKind = "tcp" | "http" | "https" | "udp" | "exec";

/** Inclusive HTTP status range, e.g. [200, 399]. */
export type StatusRange = readonly [number, number];

interface CheckCommon {
  /** Time between checks while the target's state is settled. */
  intervalMs: number;
  /** Time between checks while the target is changing state (after one differing result). */
  fastIntervalMs: number;
  /** A probe that has not answered after this long failed. Less than intervalMs. */
  timeoutMs: number;
  /** Consecutive successes that bring a down target up. An unknown target takes the verdict of its first result. */
  rise: number;
  /** Consecutive failures that take an up target down. An unknown target takes the verdict of its first result. */
  fall: number;
  /** Each wait is stretched or shrunk by a random fraction up to this (0..0.5), so checks do not run in lock-step. */
  jitter: number;
  /** Local address the probe is sent from; undefined = the kernel's choice. */
  source?: string;
}

export interface TcpCheck extends CheckCommon {
  kind: "tcp";
  /** Port on the target's address; undefined = the service's first port. */
  port?: number;
}

export interface HttpCheck extends CheckCommon {
  kind: "http" | "https";
  port?: number;
  method: string;
  /** Path and query, starting with "/". */
  path: string;
  /** Host header; undefined = the target's address. */
  host?: string;
  /** Statuses counted as up. */
  expectStatus: StatusRange[];
  /** A regular expression the body (first 64 KiB) must match; undefined = any body. */
  expectBody?: string;
  /** https: verify the certificate (default false: targets rarely have one for their address). */
  verify: boolean;
  /** https: server name sent in the TLS handshake; undefined = none (an address is not a name). */
  sni?: string;
}

export interface UdpCheck extends CheckCommon {
  kind: "udp";
  port?: number;
  /** Payload sent, as bytes (the config accepts text or hex). */
  send: Uint8Array;
  /** A regular expression the reply (as latin1 text) must match; undefined = any reply. */
  expect?: string;
}

export interface ExecCheck extends CheckCommon {
  kind: "exec";
  /** argv[0] and arguments; run without a shell. Exit status 0 = up. */
  command: string[];
}

export type HealthCheckSpec = TcpCheck | HttpCheck | UdpCheck | ExecCheck;

/** Health of one target as the checker sees it. */
export type Health = "unknown" | "up" | "down";

/** One target as the checker sees it: where probes go and with which check. */
export interface HealthTargetSpec {
  fwmark: number;
  /** The target's own address (also for DSR targets, whose VIP is on their loopback). */
  address: string;
  /**
   * This target's check when it differs from the service's (already merged with the
   * service's by the config); null = this target is not checked.
   */
  check?: HealthCheckSpec | null;
}

/** One service: its targets share a check unless a target overrides it. */
export interface HealthServiceSpec {
  /** The service's name, also the name of its load balancer's state file. */
  name: string;
  /** The service's first port: where tcp/http/https/udp checks go unless they name a port. */
  port?: number;
  /** undefined = the service's targets are not checked (their health stays as it is). */
  check?: HealthCheckSpec;
  targets: HealthTargetSpec[];
  /** Longest wait after start (or after the service appears) for every target's first verdict. */
  warmupMs: number;
}

/** When every target of a service is down: keep the last table (keep-last) or none. */
export type AllDownPolicy = "keep-last" | "none";
