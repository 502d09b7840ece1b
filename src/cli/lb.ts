// `nflb lb`: the NFQUEUE daemon.
import type { Command } from "commander";
import { type DataplaneHandle, type ServiceOptions, startDataplane } from "../dataplane/daemon.js";
import { followLogLevel } from "../dataplane/loglevel.js";
import { parseQueueRange, queueNumbers } from "../domain/queues.js";
import {
  DEFAULT_FRAG_CONFIG,
  type FragTableConfig,
  validateFragConfig,
} from "../fragments/config.js";
import {
  LEVEL_VALUE,
  LOG_LEVELS,
  Logger,
  type LogLevelName,
  parseLogLevel,
} from "../log/logger.js";
import { controlSocketPath } from "../paths.js";
import { parseHostPort } from "../trace/paths.js";
import { action, addNameOption, CliError, fwmarkArg, intArg, requireRoot } from "./common.js";

interface LbOptions {
  name: string;
  queue: string;
  qlength: number;
  copyRange: number;
  batch: number;
  rcvbuf: number;
  failOpen?: boolean;
  gso: boolean;
  notargetsFwmark?: number;
  invalid: string;
  loglevel?: string;
  controlSocket?: string;
  controlTcp?: string;
  fragQueue?: number;
  fragTun?: string;
  ftSize: number;
  ftBuckets: number;
  ftFrag: number;
  ftFragBytes: number;
  ftTtl: number;
  tier?: string;
  nolbFwmark?: number;
  promiscuousPing?: boolean;
}

/** The TUN device `nflb setup --fragments` creates for a load balancer by default. */
export function defaultFragTun(name: string): string {
  return `nflb-${name}`.slice(0, 15);
}

export function registerLbCommand(program: Command): void {
  addNameOption(
    program
      .command("lb")
      .description(
        "run the load-balancer daemon: read packets from NFQUEUE, answer ACCEPT with the target's fwmark",
      ),
  )
    .option("--queue <q>", "queue number or range FIRST:LAST (one worker thread per queue)", "0")
    .option(
      "--qlength <n>",
      "kernel queue max length (the kernel caps it at 65536)",
      intArg(1, 65536),
      16384,
    )
    .option(
      "--copy-range <bytes>",
      "bytes of each packet copied to user space (headers)",
      intArg(64, 65535),
      256,
    )
    .option("--batch <n>", "packets read per recvmmsg", intArg(1, 1024), 64)
    .option(
      "--rcvbuf <bytes>",
      "socket receive buffer (SO_RCVBUFFORCE)",
      intArg(65536, 1 << 30),
      32 << 20,
    )
    .option(
      "--fail-open",
      "when the queue is full the kernel accepts packets UNMARKED instead of dropping them",
    )
    .option("--no-gso", "let the kernel segment GSO packets before queueing them")
    .option(
      "--notargets-fwmark <fwmark>",
      "mark for packets when no target is active (default: drop)",
      fwmarkArg,
    )
    .option(
      "--invalid <verdict>",
      "what to do with packets that cannot be parsed: drop or accept (unmarked)",
      "drop",
    )
    .option(
      "--loglevel <level>",
      `log level: ${LOG_LEVELS.join(", ")} (default: the level stored by nflb loglevel, else notice)`,
    )
    .option(
      "--control-socket <path>",
      "control socket for nflb trace (default <run dir>/netns-<inode>/<name>.sock, root-only)",
    )
    .option(
      "--control-tcp <[host:]port>",
      "also serve the control endpoint on TCP (host default 127.0.0.1; no authentication)",
    )
    .option(
      "--frag-queue <n>",
      "queue of IP fragments (setup --fragments): whole packets, tracked in the fragment table",
      intArg(0, 65535),
    )
    .option("--frag-tun <dev>", "TUN device for re-injecting held fragments (default nflb-<name>)")
    .option(
      "--ft-size <n>",
      "fragment table: datagrams tracked",
      intArg(1, 1 << 20),
      DEFAULT_FRAG_CONFIG.entries,
    )
    .option(
      "--ft-buckets <n>",
      "fragment table: extra entries for hash collisions",
      intArg(0, 1 << 20),
      DEFAULT_FRAG_CONFIG.extraBuckets,
    )
    .option(
      "--ft-frag <n>",
      "fragment table: fragments held at once while their first fragment is missing",
      intArg(0, 1 << 20),
      DEFAULT_FRAG_CONFIG.maxFragments,
    )
    .option(
      "--ft-frag-bytes <n>",
      "fragment table: largest fragment held",
      intArg(68, 65535),
      DEFAULT_FRAG_CONFIG.maxFragmentBytes,
    )
    .option(
      "--ft-ttl <ms>",
      "fragment table: lifetime of a datagram's entry",
      intArg(1, 60_000),
      DEFAULT_FRAG_CONFIG.ttlMs,
    )
    .option(
      "--nolb-fwmark <fwmark>",
      "mark for packets no flow matches, when flows are defined (default: drop)",
      fwmarkArg,
    )
    .option("--promiscuous-ping", "ICMP echo matches any flow whose addresses match")
    .option(
      "--tier <name>",
      "load-balancer tier state: fragments go to the instance their addresses hash to (needs init --ownfw)",
    )
    .action(
      action(async (opts: LbOptions) => {
        if (opts.invalid !== "drop" && opts.invalid !== "accept") {
          throw new CliError(`invalid --invalid "${opts.invalid}": expected drop or accept`);
        }
        let queues: number[];
        let level: number;
        let controlTcp: { host: string; port: number } | undefined;
        try {
          queues = queueNumbers(parseQueueRange(opts.queue));
          level = opts.loglevel === undefined ? LEVEL_VALUE.notice : parseLogLevel(opts.loglevel);
          if (opts.controlTcp !== undefined) controlTcp = parseHostPort(opts.controlTcp);
        } catch (err) {
          throw new CliError((err as Error).message);
        }
        let fragments: { queue: number; tun: string; table: FragTableConfig } | undefined;
        if (opts.fragQueue !== undefined) {
          if (queues.includes(opts.fragQueue)) {
            throw new CliError(`--frag-queue ${opts.fragQueue} is also one of the --queue numbers`);
          }
          const table: FragTableConfig = {
            entries: opts.ftSize,
            extraBuckets: opts.ftBuckets,
            maxFragments: opts.ftFrag,
            maxFragmentBytes: opts.ftFragBytes,
            ttlMs: opts.ftTtl,
          };
          try {
            validateFragConfig(table);
          } catch (err) {
            throw new CliError((err as Error).message);
          }
          fragments = {
            queue: opts.fragQueue,
            tun: opts.fragTun ?? defaultFragTun(opts.name),
            table,
          };
        } else if (opts.fragTun !== undefined) {
          throw new CliError("--frag-tun needs --frag-queue");
        }
        requireRoot("nflb lb");
        const log = new Logger("nflb-lb", level);
        const code = await runDaemon(
          {
            name: opts.name,
            queues,
            queue: {
              maxLen: opts.qlength,
              copyRange: opts.copyRange,
              failOpen: opts.failOpen === true,
              gso: opts.gso,
              batchSize: opts.batch,
              rcvbufBytes: opts.rcvbuf,
            },
            notargetsFwmark: opts.notargetsFwmark ?? 0,
            acceptInvalid: opts.invalid === "accept",
            nolbFwmark: opts.nolbFwmark ?? 0,
            promiscuousPing: opts.promiscuousPing === true,
            fragments,
            tier: opts.tier,
          },
          {
            socket: opts.controlSocket ?? controlSocketPath(opts.name),
            tcp: controlTcp,
          },
          opts.loglevel === undefined,
          log,
        );
        process.exitCode = code;
      }),
    );
}

/**
 * `nflb lb`: the data plane for one load balancer, until SIGTERM or SIGINT stops it (each
 * queue answers the packets it holds first). Its log level follows the shared state.
 * Resolves with the exit code: 1 when it could not start or a queue failed.
 */
async function runDaemon(
  service: ServiceOptions,
  control: { socket: string; tcp?: { host: string; port: number } },
  keepStoredLogLevel: boolean,
  log: Logger,
): Promise<number> {
  let plane: DataplaneHandle | undefined;
  // Lines go to the tracers of the log too, once the data plane exists.
  const say = (level: LogLevelName, message: string) => {
    log[level](message);
    plane?.hub.log(level, message);
  };
  const level = followLogLevel(service.name, log, keepStoredLogLevel, say);
  const onSignal = (signal: NodeJS.Signals) => {
    say("notice", `${signal}: stopping`);
    void plane?.stop();
  };
  try {
    try {
      plane = await startDataplane({
        services: [service],
        log,
        control: { ...control, name: service.name },
      });
    } catch (err) {
      // A queue that failed to start has said why ("queue N: ..."); anything else is said here.
      if (!/^queue \d+: /.test((err as Error).message)) throw err;
      return 1;
    }
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    return await plane.done;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    level.stop();
  }
}
