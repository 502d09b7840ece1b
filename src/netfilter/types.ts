// Public types of `nflb setup` / `nflb teardown`. Pure declarations, no I/O.

/**
 * nat: NFQUEUE marks, DNAT by mark. dsr: NFQUEUE marks, policy routing by mark.
 * statistic: no daemon, iptables `statistic` rules choose and DNAT in the kernel.
 */
export type SetupMode = "nat" | "dsr" | "statistic";
export type SetupProtocol = "tcp" | "udp" | "sctp";

export interface SetupTarget {
  /** 1..2^32-1, unique; the daemon marks a packet with it. In dsr mode also the routing table. */
  fwmark: number;
  /** A unicast address of the VIPs' family (no prefix length). */
  address: string;
  /** 0..MAX_WEIGHT (src/domain/weight.ts); 0 = known, but no new flows (no statistic rule, no Maglev entries). */
  weight: number;
}

export interface SetupSpec {
  /** A load balancer name (src/domain/names.ts): 1-20 characters [A-Za-z0-9_-], starting with a letter or digit. */
  name: string;
  mode: SetupMode;
  /** Addresses or CIDRs ("10.0.0.1", "10.0.1.0/24"), all of one family, not overlapping. */
  vips: string[];
  targets: SetupTarget[];
  /** NFQUEUE number(s), 0..65535 (nat/dsr). first == last: one queue, else --queue-balance. */
  queue: { first: number; last: number };
  /** nat/dsr: accept (without a mark) instead of dropping when no daemon listens. */
  queueBypass: boolean;
  /** nat only: queue only packets of new conntrack flows; conntrack carries the rest. */
  synOnly: boolean;
  /** Empty = all protocols. */
  protocols: SetupProtocol[];
  /**
   * "" = all ports, else e.g. "80,443,8000-8100"; with no protocols it means tcp, udp, sctp.
   * With protocols or ports, ICMP for the VIPs is queued too (by rules of its own): echo
   * requests (nat, dsr, and DNATed in statistic), and in dsr the errors that quote a
   * packet (destination unreachable, packet too big, time exceeded, parameter problem),
   * which the daemon steers to the target owning the quoted flow.
   */
  ports: string;
  /** statistic mode: nth = exact (weighted) round robin, random = probability by weight. */
  statistic: "nth" | "random";
  /** nat/statistic: masquerade towards the targets (then they need no route back via the LB). */
  snat: boolean;
  /** dsr: preference of the `ip rule fwmark N table N` rules (default 1000). */
  rulePriority?: number;
  /**
   * dsr only: fragment handling by the daemon. VIP traffic is exempt from conntrack (so
   * the kernel does not reassemble it), every fragment to the VIPs goes to NFQUEUE
   * `queue` (which the daemon opens with a full copy range), and the TUN device `tun`
   * (created and removed by setup) is where the daemon re-injects stored fragments.
   */
  fragments?: SetupFragments;
  /**
   * dsr with fragments only: the other instances of a load-balancer tier (`nflb lb
   * --tier`). Per peer, like a dsr target, `ip rule fwmark F table F` and a default route
   * via the peer in table F: the daemon marks a fragment whose addresses the tier hashes
   * to another instance with that instance's fwmark, and Linux routes it there. This
   * instance's own fwmark is not listed.
   */
  tierPeers?: SetupTierPeer[];
}

export interface SetupTierPeer {
  /** The peer instance's own fwmark (its `nflb init --ownfw`), also the routing table. */
  fwmark: number;
  /** The peer's address on a directly connected network, of the VIPs' family. */
  address: string;
}

export interface SetupFragments {
  /** NFQUEUE number 0..65535 outside the normal queue range. */
  queue: number;
  /** TUN device name: 1-15 bytes, no "/", ":", "%" or whitespace. */
  tun: string;
}

/** The packet mark reserved for fragments with --fragments: see src/domain/fwmark.ts. */
export { FRAGMENT_MARK } from "../domain/fwmark.js";

export interface RuleCounter {
  fwmark: number;
  address: string;
  /**
   * Packets (bytes) sent to this target, client -> target direction. nat/statistic: every
   * packet of the target's conntrack flows to the VIPs; dsr: every packet carrying its mark.
   */
  packets: number;
  bytes: number;
  /** New connections sent to the target (nat, statistic: its DNAT rule); absent in dsr. */
  connections?: number;
}

export interface SetupCounters {
  /**
   * Packets the normal NFQUEUE rule(s) matched (nat/dsr; zero in statistic mode), ICMP
   * included, fragments not: everything the daemon's normal queues received.
   */
  queued: { packets: number; bytes: number };
  /**
   * With --proto/--ports (nat/dsr): the part of `queued` that the ICMP rules matched
   * (echo requests; errors in dsr). Absent when there are no separate ICMP rules.
   */
  icmp?: { packets: number; bytes: number };
  /** --fragments: fragments (first ones included) the fragment queue rule(s) matched. */
  fragments?: { packets: number; bytes: number };
  targets: RuleCounter[];
  /**
   * --tier-peer: per peer instance, the fragments (packets, bytes) this instance's
   * daemon marked for it, as they left for the peer. Absent without peers.
   */
  peers?: RuleCounter[];
}

/** Thrown for invalid specs, failed preflight checks and failed (rolled back) setups. */
export class SetupError extends Error {
  override name = "SetupError";
}

/**
 * Test-only: make setup fail after one of its steps, to prove the rollback, or exit the
 * process there ("exit-..."), to prove that teardown and setup recover from a crash.
 */
export type FaultPoint =
  | "after-ip"
  | "after-nft"
  | "after-iptables"
  | "exit-after-ip"
  | "exit-after-nft"
  | "exit-after-iptables";

/**
 * Test-only: strike at one operation of a setup or teardown (tool runs and writes of
 * nflb's own files, counted from 1): throw as if it failed, or die by SIGKILL; before it
 * takes effect or after.
 */
export interface OperationFault {
  action: "fail" | "kill";
  when: "before" | "after";
  op: number;
}

/**
 * Changes made together with the rules, all or nothing (the Maglev state of `nflb setup`).
 * Called once the rules are in place and before the setup is recorded as applied; it
 * registers the undo of each change before making it. If it throws, every registered
 * undo runs and the rules are rolled back to what they were.
 */
export type SetupCompanion = (onUndo: (what: string, undo: () => void) => void) => void;

export interface SetupOptions {
  /** Receives non-fatal findings (e.g. forwarding disabled). Default: write to stderr. */
  warn?: (message: string) => void;
  /** Test-only fault injection. */
  failAt?: FaultPoint | OperationFault;
  /** See SetupCompanion. */
  companion?: SetupCompanion;
}

export interface TeardownOptions {
  /** Test-only fault injection. */
  failAt?: OperationFault;
}
