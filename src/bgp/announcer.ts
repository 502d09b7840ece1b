// The announcer: facts in (update), BIRD configuration and the announcement device out.
// It holds the only I/O of VIP announcement: the include file, `birdc configure`, the
// device. Decisions (decide.ts) and rendering (render.ts) are pure.
//
// The safety rule it keeps: the device is up (so BIRD can announce anything) only after
// BIRD confirmed a configuration whose VIPs are all wanted now. A VIP no longer wanted
// that BIRD might still announce (its configure failed) sets the device down: every VIP
// is withdrawn rather than one announced that is not served. Until the first confirmed
// configuration (at start, whatever an earlier run left in the file) nothing is
// announced. The device is taken (down) before anything else, so a second process fails
// at once instead of rewriting the first one's announcements.
import { performance } from "node:perf_hooks";
import { type BirdTools, birdc, configure, parseCheck, requireBird } from "./birdc.js";
import { planVips, type VipPlan } from "./decide.js";
import { AnnounceDevice } from "./device.js";
import { readInclude, writeInclude } from "./files.js";
import { type ProtocolInfo, parseBfdSessions, parseBirdTime, parseProtocols } from "./parse.js";
import { BFD_PROTOCOL, DEFAULT_DEVICE, renderInclude, STATIC_PROTOCOLS } from "./render.js";
import type { BgpSpec } from "./spec.js";
import { type TrackedVip, trackVips, type VipChange, type VipOutcome, vipState } from "./track.js";
import {
  BgpError,
  type BgpStatus,
  type BirdOutcome,
  type ServiceFacts,
  type SessionState,
} from "./types.js";
import {
  familyOf,
  type NormalizedVip,
  protocolName,
  validateBgpSpec,
  validateDevice,
} from "./validate.js";

export interface AnnouncerOptions extends BirdTools {
  /** The announcement device's name (default DEFAULT_DEVICE, "nflb_bgp"). */
  device?: string;
  /** One line per event worth logging (VIP announced/withdrawn, BIRD down/back). */
  log?: (line: string) => void;
}

export interface UpdateResult {
  /** VIPs whose announcement changed in this round. */
  changes: VipChange[];
  /** How handing the configuration to BIRD ended (ok when nothing had to change). */
  bird: BirdOutcome;
}

const OK: BirdOutcome = { ok: true };
const NOT_STARTED: BirdOutcome = { ok: false, kind: "down", message: "not started" };

function failure(err: unknown): BirdOutcome {
  if (err instanceof BgpError && err.kind !== "invalid") {
    return { ok: false, kind: err.kind, message: err.message };
  }
  return { ok: false, kind: "io", message: (err as Error).message };
}

/** Every VIP BIRD may announce (`loaded`) is wanted now, with the same attributes or not. */
function subsetOf(loaded: ReadonlySet<string> | undefined, wanted: readonly NormalizedVip[]) {
  if (!loaded) return false;
  const w = new Set(wanted.map((v) => v.prefix));
  return [...loaded].every((p) => w.has(p));
}

export class BgpAnnouncer {
  private spec: BgpSpec;
  private readonly device: AnnounceDevice;
  private readonly tools: BirdTools;
  private readonly log: (line: string) => void;
  private plans: VipPlan[] = [];
  private tracked = new Map<string, TrackedVip>();
  /** Text of the include file as this process last left it (undefined: none). */
  private written: string | undefined;
  /** Prefixes of the configuration BIRD last confirmed; undefined: unknown. */
  private loaded: Set<string> | undefined;
  private outcome: BirdOutcome = NOT_STARTED;
  private lastApply: BgpStatus["lastApply"];
  private state: "new" | "running" | "stopped" = "new";
  private chain: Promise<unknown> = Promise.resolve();

  /** Validates the spec (BgpError "invalid"); touches nothing. */
  constructor(spec: BgpSpec, options: AnnouncerOptions = {}) {
    this.spec = validateBgpSpec(spec);
    this.device = new AnnounceDevice(validateDevice(options.device ?? DEFAULT_DEVICE));
    this.tools = { birdc: options.birdc, bird: options.bird };
    this.log = options.log ?? (() => undefined);
  }

  /** The include file's text for the VIPs announced now: what a dry run shows. */
  render(): string {
    return renderInclude(this.spec, this.wantedVips(), { device: this.device.name });
  }

  /**
   * Takes the device (down), writes the include with no VIP, has BIRD load it and, once
   * it did, sets the device up. Announces nothing. Throws BgpError when BIRD is not
   * installed or the device is held by another process (or cannot be made); any other
   * failure (BIRD down, refusing, not including the file) is returned, and retried by
   * every update().
   */
  start(nowMs: number): Promise<UpdateResult> {
    return this.serial(async () => {
      if (this.state !== "new") throw new BgpError("io", "the announcer was started already");
      requireBird(this.tools);
      this.device.acquire();
      this.state = "running";
      try {
        const result = await this.sync(nowMs);
        const o = result.bird;
        // Permanent: no retry will help. Down, refused, unwired: update() retries.
        if (!o.ok && o.kind === "missing") {
          throw new BgpError(o.kind, o.message);
        }
        return result;
      } catch (err) {
        this.state = "stopped";
        this.device.release();
        throw err;
      }
    });
  }

  /**
   * Decides every VIP from its services' facts (decide.ts) and hands the result to BIRD
   * when it changed, or when the last attempt failed (so BIRD coming up is noticed: call
   * it again at least every few seconds). Throws BgpError("invalid") for VIPs that
   * contradict each other; nothing changes then.
   */
  update(services: readonly ServiceFacts[], nowMs: number): Promise<UpdateResult> {
    return this.serial(async () => {
      if (this.state !== "running") {
        throw new BgpError(
          "io",
          `update() on an announcer that is ${this.state === "new" ? "not started" : "stopped"}`,
        );
      }
      this.plans = planVips(services);
      return this.sync(nowMs);
    });
  }

  /** A new spec (reload). Sessions of neighbours whose settings changed restart; no other. */
  setSpec(spec: BgpSpec, nowMs: number): Promise<UpdateResult> {
    const valid = validateBgpSpec(spec);
    return this.serial(async () => {
      this.spec = valid;
      return this.state === "running" ? this.sync(nowMs) : { changes: [], bird: this.outcome };
    });
  }

  /**
   * Withdraws every VIP: releases the device first (the kernel deletes it and BIRD drops
   * the routes within milliseconds, whatever else fails), then leaves an include without
   * VIPs and has BIRD load it. Call it before the data plane goes away. Idempotent.
   */
  stop(nowMs: number): Promise<UpdateResult> {
    return this.serial(async () => {
      if (this.state === "stopped") return { changes: [], bird: this.outcome };
      const wasRunning = this.state === "running";
      this.state = "stopped";
      this.device.release();
      if (!wasRunning) return { changes: [], bird: this.outcome };
      return this.sync(nowMs);
    });
  }

  /** VIP states and the last apply, without asking BIRD (cheap, synchronous). */
  snapshot(nowMs: number): Omit<BgpStatus, "sessions"> {
    return {
      at: new Date(nowMs).toISOString(),
      bird: this.outcome,
      device: { name: this.device.name, held: this.device.held, up: this.device.up },
      lastApply: this.lastApply,
      vips: [...this.tracked.values()].map(vipState),
    };
  }

  /** The snapshot plus the BGP sessions as BIRD reports them now. */
  async status(nowMs: number): Promise<BgpStatus> {
    const snap = this.snapshot(nowMs);
    const sessions = await readSessions(this.spec, nowMs, this.tools).catch((err) => {
      snap.bird = failure(err);
      return this.spec.neighbors.map(
        (n): SessionState => ({
          neighbor: n.address,
          asn: n.asn,
          protocol: protocolName(n.address),
          state: "Unknown",
          up: false,
        }),
      );
    });
    return { ...snap, sessions };
  }

  // ---- internals ------------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private wantedVips(): NormalizedVip[] {
    if (this.state !== "running") return [];
    return this.plans.filter((p) => p.decision.announce && this.hasNeighbour(p)).map((p) => p.vip);
  }

  private hasNeighbour(p: VipPlan): boolean {
    return this.spec.neighbors.some((n) => familyOf(n.address) === p.vip.family);
  }

  /** Renders, writes, configures; keeps the safety rule; tracks the outcome per VIP. */
  private async sync(nowMs: number): Promise<UpdateResult> {
    // What the file holds now, not what we think we left: whoever changed it, BIRD reads it.
    this.written = await readInclude(this.spec.bird.include).catch(() => undefined);
    const wanted = this.wantedVips();
    const text = renderInclude(this.spec, wanted, { device: this.device.name });
    const changed = text !== this.written;
    if (changed || !this.outcome.ok) {
      const t0 = performance.now();
      const before = this.outcome;
      this.outcome = await this.apply(text, changed, wanted);
      this.lastApply = {
        at: new Date(nowMs).toISOString(),
        outcome: this.outcome,
        durationMs: Math.round((performance.now() - t0) * 10) / 10,
      };
      this.logOutcome(before, this.outcome);
    }
    if (this.outcome.ok && this.state === "running" && !this.device.up) {
      try {
        this.device.setUp();
      } catch (err) {
        this.outcome = failure(err);
        this.log(`bgp: ${(err as Error).message}`);
      }
    }
    return { changes: this.track(wanted, nowMs), bird: this.outcome };
  }

  /** Parse-checks, writes and configures; every failure becomes the outcome. */
  private async apply(
    text: string,
    changed: boolean,
    wanted: NormalizedVip[],
  ): Promise<BirdOutcome> {
    const previous = this.written;
    try {
      if (changed) {
        // Our rendering must parse: a failure here is a bug, and BIRD never sees it.
        await parseCheck(text, this.tools);
        await writeInclude(this.spec.bird.include, text);
        this.written = text;
      }
      await configure(this.spec.bird.socket, this.tools);
      await this.checkWired();
      this.loaded = new Set(wanted.map((v) => v.prefix));
      return OK;
    } catch (err) {
      if (err instanceof BgpError && err.kind === "refused" && changed) {
        // BIRD keeps what it had: so does the file, for its next start.
        await writeInclude(this.spec.bird.include, previous ?? "").then(
          () => {
            this.written = previous;
          },
          (e) => this.log(`bgp: ${(e as Error).message}`),
        );
      }
      if (this.device.up && !subsetOf(this.loaded, wanted)) {
        // BIRD may still announce a VIP that is not served: withdraw everything.
        this.withdrawAll();
      }
      return failure(err);
    }
  }

  private withdrawAll(): void {
    try {
      this.device.setDown();
    } catch (err) {
      this.log(`bgp: ${(err as Error).message}; releasing the device instead`);
      this.device.release();
    }
  }

  /** BIRD runs nflb's protocols (its bird.conf includes our file). */
  private async checkWired(): Promise<void> {
    const protocols = parseProtocols(
      await birdc(this.spec.bird.socket, ["show", "protocols"], this.tools),
    );
    const names = new Set(protocols.map((p) => p.name));
    if (!names.has(STATIC_PROTOCOLS[4]) || !names.has(STATIC_PROTOCOLS[6])) {
      throw new BgpError(
        "unwired",
        `BIRD runs without nflb's configuration: add the line include "${this.spec.bird.include}"; to its bird.conf`,
      );
    }
    const otherBfd = protocols.filter((p) => p.proto === "BFD" && p.name !== BFD_PROTOCOL);
    if (names.has(BFD_PROTOCOL) && otherBfd.length > 0) {
      this.log(
        `bgp: warning: BIRD has another BFD protocol (${otherBfd.map((p) => p.name).join(", ")}): two compete for the BFD port and sessions stay down; remove it (nflb's ${BFD_PROTOCOL} serves every protocol)`,
      );
    }
  }

  private logOutcome(before: BirdOutcome, after: BirdOutcome): void {
    if (!after.ok && (before.ok || before.message !== after.message)) {
      this.log(`bgp: ${after.message}`);
    }
    if (after.ok && !before.ok && before !== NOT_STARTED) {
      this.log("bgp: BIRD took the configuration again");
    }
  }

  private track(wanted: readonly NormalizedVip[], nowMs: number): VipChange[] {
    const wantedSet = new Set(wanted.map((v) => v.prefix));
    const live = this.outcome.ok && this.device.up;
    const outcomes = this.plans.map((p): VipOutcome => {
      const want = wantedSet.has(p.vip.prefix);
      return {
        vip: p.vip,
        services: p.services,
        wanted: want,
        announced: want && live && (this.loaded?.has(p.vip.prefix) ?? false),
        reason: this.reasonFor(p, want),
      };
    });
    const { next, changes } = trackVips(this.tracked, outcomes, nowMs);
    this.tracked = next;
    for (const c of changes) {
      this.log(`bgp: ${c.prefix} ${c.announced ? "announced" : "withdrawn"}: ${c.reason}`);
    }
    return changes;
  }

  /** The decision's reason, and why a wanted VIP is not announced after all. */
  private reasonFor(p: VipPlan, want: boolean): string {
    if (this.state === "stopped") return "stopped";
    if (p.decision.announce && !this.hasNeighbour(p)) {
      return `no IPv${p.vip.family} neighbour to announce it to`;
    }
    if (want && !this.outcome.ok) {
      return `${p.decision.reason}; not announced: ${this.outcome.message}`;
    }
    if (want && !this.device.up) {
      return `${p.decision.reason}; not announced: device ${this.device.name} is down`;
    }
    return p.decision.reason;
  }
}

/** The sessions of the spec's neighbours, from BIRD. Throws BgpError when BIRD cannot be asked. */
export async function readSessions(
  spec: BgpSpec,
  nowMs: number,
  tools: BirdTools = {},
): Promise<SessionState[]> {
  const protocols = parseProtocols(
    await birdc(spec.bird.socket, ["show", "protocols", "all", '"nflb_*"'], tools),
  );
  const bfd = spec.neighbors.some((n) => n.bfd)
    ? parseBfdSessions(await birdc(spec.bird.socket, ["show", "bfd", "sessions"], tools))
    : new Map<string, string>();
  const byName = new Map<string, ProtocolInfo>(protocols.map((p) => [p.name, p]));
  return spec.neighbors.map((n) => {
    const name = protocolName(n.address);
    const p = byName.get(name);
    const s: SessionState = {
      neighbor: n.address,
      asn: n.asn,
      protocol: name,
      state: p
        ? (p.bgpState ?? (p.state === "down" ? "Down" : p.info.split(/\s+/)[0] || p.state))
        : "Absent",
      up: p?.bgpState === "Established",
    };
    if (p?.since) {
      s.sinceText = p.since;
      const ms = parseBirdTime(p.since, nowMs);
      if (ms !== undefined) s.since = new Date(ms).toISOString();
    }
    if (p?.lastError) s.lastError = p.lastError;
    if (n.bfd) s.bfd = bfd.get(n.address) ?? "Absent";
    return s;
  });
}
