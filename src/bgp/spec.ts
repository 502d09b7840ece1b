// The `bgp` part of the configuration, after validation and normalisation (durations in
// milliseconds). The config schema (src/config/) produces exactly this type; the BIRD
// driver (src/bgp/) consumes it. Pure declarations.

export interface BfdSpec {
  /** Desired minimum transmit and receive interval. */
  intervalMs: number;
  /** Missed packets before the session is declared down. */
  multiplier: number;
}

export interface BgpNeighbor {
  /** The router's address (IPv4 or IPv6), directly connected or reachable. */
  address: string;
  asn: number;
  /** TCP MD5 password; undefined = none. */
  password?: string;
  /** BGP hold time in seconds (3..65535); keepalive is a third of it. */
  holdTimeS: number;
  /** BFD on the session (fast failure detection of the path), undefined = off. */
  bfd?: BfdSpec;
}

export interface BgpSpec {
  localAsn: number;
  /** IPv4 dotted quad. */
  routerId: string;
  neighbors: BgpNeighbor[];
  /** Where nflb talks to BIRD and the file nflb writes for it to include. */
  bird: { socket: string; include: string };
}

/** Announcement attributes of one VIP (set per VIP in a service). */
export interface VipAnnouncement {
  /** "10.0.0.1/32" or "fd00::1/128" (canonical CIDR). */
  prefix: string;
  /** Standard communities "ASN:VALUE" (and large "A:B:C"), in order. */
  communities: string[];
  /** Multi-exit discriminator; undefined = none. */
  med?: number;
}
