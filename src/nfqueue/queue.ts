// The batch loop over one nfnetlink_queue: recvmmsg a batch of packet messages into one
// preallocated buffer, decode them into typed arrays, let the caller choose verdicts,
// send all verdicts with one sendto. Batching is what makes user space keep up.
import { loadAddon, type NativeAddon, type PollHandle } from "../native/addon.js";
import {
  decodeMessages,
  encodeConfig,
  encodeVerdict,
  messageLength,
  messageType,
  newDecodeCounters,
  PacketArrays,
  parseAck,
  viewOf,
} from "./codec.js";
import {
  NF_ACCEPT,
  NF_DROP,
  NF_REPEAT,
  NFQ_MAX_COPY_RANGE,
  NFQ_MAX_QUEUE_LEN,
  NFQ_TYPE_PACKET,
  NFQA_CFG_F_FAIL_OPEN,
  NFQA_CFG_F_GSO,
  NFQNL_CFG_CMD_BIND,
  NFQNL_CFG_CMD_UNBIND,
  NFQNL_COPY_PACKET,
  NLMSG_ERROR,
  VERDICT_MARK_LEN,
} from "./constants.js";
import { readQueueProcStats } from "./procstats.js";

export interface QueueOptions {
  queue: number;
  /** Packets the kernel holds waiting for a verdict; <= 65536. Default 16384. */
  maxLen: number;
  /** Bytes of each packet copied to us; headers suffice for balancing. Default 256. */
  copyRange: number;
  /** NFQA_CFG_F_FAIL_OPEN: when the queue is full, accept (unmarked) instead of drop. */
  failOpen: boolean;
  /** NFQA_CFG_F_GSO: take GSO packets whole instead of having the kernel segment them. */
  gso: boolean;
  /** recvmmsg slots per batch (1..1024). Default 64. */
  batchSize: number;
  /** Socket receive buffer (SO_RCVBUFFORCE). Default 32 MiB. */
  rcvbufBytes: number;
  /** Batches handled per readiness callback before yielding to the event loop. Default 16. */
  maxBatchesPerWakeup?: number;
  /** Where rate-limited error reports go. Default console.error. */
  log?: (message: string) => void;
}

export type QueueInit = Pick<QueueOptions, "queue"> & Partial<QueueOptions>;

export const QUEUE_DEFAULTS: Omit<QueueOptions, "queue"> = {
  maxLen: 16384,
  copyRange: 256,
  failOpen: false,
  gso: true,
  batchSize: 64,
  rcvbufBytes: 32 * 1024 * 1024,
};

/** Valid only during the onBatch call: the arrays and buffer are reused for the next one. */
export interface PacketBatch {
  readonly count: number;
  readonly buf: Uint8Array;
  readonly ids: Uint32Array;
  readonly payloadOffset: Int32Array;
  readonly payloadLength: Int32Array;
  readonly origLength: Int32Array;
  readonly marks: Uint32Array;
  readonly hwProtocol: Uint16Array;
  readonly hooks: Uint8Array;
  readonly family: Uint8Array;
  readonly inIfindex: Uint32Array;
  readonly outIfindex: Uint32Array;
  readonly skbInfo: Uint32Array;
}

/** Give each packet of the batch exactly one verdict; a packet without one stays queued. */
export interface VerdictWriter {
  /** Accept and set the packet's mark (fwmark) to `mark` (uint32). */
  accept(id: number, mark: number): void;
  /** Accept, keeping the mark the packet has. */
  acceptUnmarked(id: number): void;
  drop(id: number): void;
}

export type BatchHandler = (batch: PacketBatch, verdicts: VerdictWriter) => void;

export interface QueueStats {
  batches: number;
  packets: number;
  verdicts: number;
  /** sendto failures (each loses the verdicts of one batch). */
  sendErrors: number;
  recvErrors: number;
  /** Datagrams cut by the receive slot. */
  truncated: number;
  malformed: number;
  /** NLMSG_ERROR answers to verdicts (e.g. ENOENT: unknown packet id). */
  verdictErrors: number;
  /** Batches whose handler threw (all their packets were dropped). */
  handlerErrors: number;
  /** Batches whose handler gave fewer verdicts than packets. */
  missingVerdicts: number;
}

/** Thrown by NfQueue.open; `errno` is positive. */
export class NfQueueError extends Error {
  constructor(
    message: string,
    readonly queue: number,
    readonly errno: number,
  ) {
    super(message);
    this.name = "NfQueueError";
  }
}

class BatchVerdicts implements VerdictWriter {
  off = 0;
  written = 0;
  readonly view: DataView;
  private readonly limit: number;

  constructor(
    readonly buf: Uint8Array,
    private readonly queue: number,
    private readonly flush: () => void,
  ) {
    this.view = viewOf(buf);
    this.limit = buf.length - VERDICT_MARK_LEN;
  }

  private put(id: number, verdict: number, mark: number): void {
    if (this.off > this.limit) this.flush(); // more verdicts than packets: send what we have
    this.off = encodeVerdict(this.view, this.off, this.queue, id, verdict, mark);
    this.written++;
  }

  accept(id: number, mark: number): void {
    this.put(id, NF_ACCEPT, mark >>> 0);
  }
  acceptUnmarked(id: number): void {
    this.put(id, NF_ACCEPT, -1);
  }
  drop(id: number): void {
    this.put(id, NF_DROP, -1);
  }
}

function checkInt(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`nfqueue: ${name} must be an integer in [${min}, ${max}], got ${v}`);
  }
}

const ACK_TIMEOUT_MS = 2000;
const LOG_INTERVAL_MS = 10_000;

export class NfQueue {
  readonly stats: QueueStats = {
    batches: 0,
    packets: 0,
    verdicts: 0,
    sendErrors: 0,
    recvErrors: 0,
    truncated: 0,
    malformed: 0,
    verdictErrors: 0,
    handlerErrors: 0,
    missingVerdicts: 0,
  };
  /** Netlink port id, as /proc/net/netfilter/nfnetlink_queue shows it. */
  readonly portId: number;

  private readonly a: NativeAddon;
  private readonly rx: Uint8Array;
  private readonly rxView: DataView;
  private readonly lens: Int32Array;
  private readonly slotSize: number;
  private readonly pkts: PacketArrays;
  private readonly out: BatchVerdicts;
  private readonly counters = newDecodeCounters();
  private readonly log: (message: string) => void;
  private readonly lastLog = new Map<string, number>();
  private handler: BatchHandler | undefined;
  private poll: PollHandle | undefined;
  private closed = false;
  private seq = 0;
  private handlerError: unknown;

  private constructor(
    readonly options: Readonly<QueueOptions>,
    readonly fd: number,
    addon: NativeAddon,
  ) {
    this.a = addon;
    this.log = options.log ?? ((m) => console.error(m));
    // A packet message is the copied bytes plus up to ~512 B of attributes.
    this.slotSize = (options.copyRange + 512 + 63) & ~63;
    this.rx = new Uint8Array(this.slotSize * options.batchSize);
    this.rxView = viewOf(this.rx);
    this.lens = new Int32Array(options.batchSize);
    this.pkts = new PacketArrays(options.batchSize, this.rx);
    this.out = new BatchVerdicts(
      new Uint8Array(VERDICT_MARK_LEN * options.batchSize),
      options.queue,
      () => this.sendVerdicts(),
    );
    this.portId = addon.nlPortId(fd);
  }

  /**
   * Opens a netlink socket and binds it to the queue (copy-packet mode, max length,
   * flags), reading the kernel's answer to each request. Throws NfQueueError with the
   * queue number and a hint on failure.
   */
  static open(init: QueueInit): NfQueue {
    const opts: QueueOptions = { ...QUEUE_DEFAULTS, ...init };
    checkInt("queue", opts.queue, 0, 65535);
    checkInt("maxLen", opts.maxLen, 1, NFQ_MAX_QUEUE_LEN);
    // The kernel reads 0 as "everything" (65531): receive slots must be sized for it.
    checkInt("copyRange", opts.copyRange, 1, NFQ_MAX_COPY_RANGE);
    checkInt("batchSize", opts.batchSize, 1, 1024);
    checkInt("rcvbufBytes", opts.rcvbufBytes, 0, 0x7fffffff);
    const a = loadAddon();
    const fd = a.nlOpen(opts.rcvbufBytes);
    if (fd < 0) {
      const hint = -fd === a.errno.EPROTONOSUPPORT ? " (kernel without nfnetlink?)" : "";
      throw new NfQueueError(
        `nfqueue ${opts.queue}: cannot open netlink socket: ${a.strerror(fd)}${hint}`,
        opts.queue,
        -fd,
      );
    }
    const q = new NfQueue(opts, fd, a);
    try {
      // A stale binding of this socket cannot exist, but an UNBIND first is harmless and
      // mirrors what libnetfilter_queue users do; its error (ENODEV/EPERM) is expected.
      q.configure({ command: NFQNL_CFG_CMD_UNBIND });
      const mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
      const flags = (opts.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0) | (opts.gso ? NFQA_CFG_F_GSO : 0);
      // One message: the kernel binds, then applies params, maxlen and flags in order, so
      // no packet is ever queued to us in the default copy-none mode.
      const err = q.configure({
        command: NFQNL_CFG_CMD_BIND,
        copyMode: NFQNL_COPY_PACKET,
        copyRange: opts.copyRange,
        maxLen: opts.maxLen,
        flags,
        mask,
      });
      if (err !== 0) throw q.bindError(err);
    } catch (e) {
      a.fdClose(fd);
      q.closed = true;
      throw e;
    }
    return q;
  }

  get queue(): number {
    return this.options.queue;
  }

  /** Starts reading on the event loop; onBatch runs for each batch of packets. */
  start(onBatch: BatchHandler): void {
    if (this.closed) throw new Error(`nfqueue ${this.queue}: closed`);
    if (this.poll) throw new Error(`nfqueue ${this.queue}: already started`);
    this.handler = onBatch;
    const rounds = this.options.maxBatchesPerWakeup ?? 16;
    this.poll = this.a.pollStart(this.fd, () => {
      // Bounded: the rest stays readable and uv_poll (level-triggered) calls us again
      // after timers and other I/O had their turn.
      for (let r = 0; r < rounds && !this.closed; r++) {
        if (this.pump(onBatch) <= 0) break;
      }
    });
  }

  /**
   * Synchronously handles every packet queued now (for shutdown: pending packets get
   * verdicts instead of being dropped by the unbind). Returns the packets handled.
   */
  drain(onBatch: BatchHandler | undefined = this.handler): number {
    if (this.closed || !onBatch) return 0;
    const before = this.stats.packets;
    // Bounded so a steady inflow cannot keep us here forever.
    const maxRounds = Math.ceil((2 * this.options.maxLen) / this.options.batchSize) + 16;
    for (let r = 0; r < maxRounds; r++) {
      if (this.pump(onBatch) <= 0) break;
    }
    return this.stats.packets - before;
  }

  /** Stops polling, unbinds (the kernel drops whatever is still queued) and closes. */
  close(): void {
    if (this.closed) return;
    if (this.poll) this.a.pollStop(this.poll);
    this.poll = undefined;
    const buf = new Uint8Array(64);
    const end = encodeConfig(
      viewOf(buf),
      0,
      this.queue,
      { command: NFQNL_CFG_CMD_UNBIND },
      0,
      false,
    );
    this.a.nlSend(this.fd, buf, end);
    this.a.fdClose(this.fd);
    this.closed = true;
  }

  /** One recvmmsg, decode, handler, one sendto. Returns datagrams read, 0 or -errno. */
  private pump(onBatch: BatchHandler): number {
    const { rx, rxView, lens, slotSize, pkts, counters } = this;
    const n = this.a.nlRecvBatch(this.fd, rx, slotSize, this.options.batchSize, lens);
    if (n <= 0) {
      if (n < 0) {
        this.stats.recvErrors++;
        this.report("recv", `recvmmsg failed: ${this.a.strerror(n)}`);
      }
      return n;
    }
    for (let s = 0; s < n && !this.closed; s++) {
      let len = lens[s];
      const cut = len < 0;
      if (cut) {
        len = -len;
        this.stats.truncated++;
      }
      let pos = s * slotSize;
      const end = pos + len;
      for (;;) {
        pos = decodeMessages(rxView, pos, end, pkts, counters, cut);
        if (pos >= end) break;
        this.dispatch(onBatch); // arrays full mid-datagram: hand them over, continue
      }
    }
    if (pkts.count > 0) this.dispatch(onBatch);
    this.stats.malformed = counters.malformed;
    this.stats.verdictErrors = counters.errorAcks;
    const err = this.handlerError;
    if (err !== undefined) {
      this.handlerError = undefined;
      throw err;
    }
    return n;
  }

  private dispatch(onBatch: BatchHandler): void {
    const pkts = this.pkts;
    const out = this.out;
    out.off = 0;
    out.written = 0;
    this.stats.batches++;
    this.stats.packets += pkts.count;
    try {
      onBatch(pkts, out);
    } catch (err) {
      // Fail closed: drop the whole batch so no packet stays stranded; the rest of the
      // received datagrams are still handled, then pump() rethrows (uncaughtException
      // from the poll callback, or drain()'s caller).
      this.stats.handlerErrors++;
      if (this.handlerError === undefined) this.handlerError = err;
      out.off = 0;
      out.written = 0;
      for (let i = 0; i < pkts.count; i++) out.drop(pkts.ids[i]);
      this.sendVerdicts();
      pkts.count = 0;
      return;
    }
    if (out.written < pkts.count) this.stats.missingVerdicts++;
    this.sendVerdicts();
    pkts.count = 0;
  }

  private sendVerdicts(): void {
    const out = this.out;
    if (out.off === 0) return;
    if (this.closed) {
      // closed from inside the handler: the unbind already dropped these packets
      out.off = 0;
      out.written = 0;
      return;
    }
    this.stats.verdicts += out.written;
    let r = 0;
    // ENOBUFS/EAGAIN are transient memory pressure; a few immediate retries, then give up
    // on this batch (its packets stay queued until the kernel flushes them).
    for (let attempt = 0; attempt < 3; attempt++) {
      r = this.a.nlSend(this.fd, out.buf, out.off);
      if (r >= 0 || (-r !== this.a.errno.ENOBUFS && -r !== this.a.errno.EAGAIN)) break;
    }
    if (r < 0) {
      this.stats.sendErrors++;
      this.report("send", `sending ${out.written} verdicts failed: ${this.a.strerror(r)}`);
    }
    out.off = 0;
    out.written = 0;
  }

  /** Sends one config request and waits for its ACK. Returns 0 or -errno. */
  private configure(cfg: Parameters<typeof encodeConfig>[3]): number {
    const buf = new Uint8Array(128);
    const view = viewOf(buf);
    const seq = ++this.seq;
    const end = encodeConfig(view, 0, this.queue, cfg, seq);
    const sent = this.a.nlSend(this.fd, buf, end);
    if (sent < 0) return sent;
    const rx = new Uint8Array(this.slotSize);
    const rxv = viewOf(rx);
    const deadline = Date.now() + ACK_TIMEOUT_MS;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return -this.a.errno.ETIMEDOUT;
      const n = this.a.nlRecvOne(this.fd, rx, left);
      if (n < 0) return n;
      if (n === 0) continue;
      for (let off = 0; off < n; ) {
        const len = messageLength(rxv, off, n);
        if (len < 0) break;
        const type = messageType(rxv, off);
        if (type === NLMSG_ERROR) {
          const ack = parseAck(rxv, off, len);
          if (ack && ack.seq === seq) return ack.error;
        } else if (type === NFQ_TYPE_PACKET) {
          // Queued between bind and ACK: send it round the hook again (NF_REPEAT) so it
          // comes back once we are reading, rather than stranding it.
          this.repeat(rxv, off, len);
        }
        off += (len + 3) & ~3;
      }
    }
  }

  private repeat(v: DataView, off: number, len: number): void {
    const one = new PacketArrays(1);
    const c = newDecodeCounters();
    decodeMessages(v, off, off + len, one, c);
    if (one.count === 0) return;
    const buf = new Uint8Array(VERDICT_MARK_LEN);
    const end = encodeVerdict(viewOf(buf), 0, this.queue, one.ids[0], NF_REPEAT, -1);
    this.a.nlSend(this.fd, buf, end);
  }

  private bindError(err: number): NfQueueError {
    const e = this.a.errno;
    const q = this.queue;
    const code = -err;
    let hint = "";
    if (code === e.EPERM) {
      // The kernel answers EPERM both without CAP_NET_ADMIN and when another socket owns
      // the queue; /proc tells the two apart.
      let owner: { portId: number } | undefined;
      try {
        owner = readQueueProcStats().find((s) => s.queue === q && s.portId !== this.portId);
      } catch {
        // unreadable /proc file (EACCES): we are not privileged
      }
      hint = owner
        ? `queue ${q} is already bound by another process (netlink port ${owner.portId})`
        : "need CAP_NET_ADMIN (run as root)";
    } else if (code === e.EBUSY) {
      hint = `queue ${q} is already bound by another process`;
    } else if (code === e.EOPNOTSUPP) {
      hint = "the kernel does not support the requested queue flags (gso/fail-open)";
    } else if (code === e.EINVAL) {
      hint = "is nfnetlink_queue available in this kernel?";
    } else if (code === e.ETIMEDOUT) {
      hint = "no answer from the kernel";
    }
    return new NfQueueError(
      `nfqueue ${q}: bind failed: ${this.a.strerror(err)}${hint ? ` — ${hint}` : ""}`,
      q,
      code,
    );
  }

  private report(kind: string, message: string): void {
    const now = Date.now();
    const last = this.lastLog.get(kind) ?? -Infinity;
    if (now - last < LOG_INTERVAL_MS) return;
    this.lastLog.set(kind, now);
    const s = this.stats;
    this.log(
      `nfqueue ${this.queue}: ${message} (sendErrors=${s.sendErrors} recvErrors=${s.recvErrors})`,
    );
  }
}
