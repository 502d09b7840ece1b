// `nflb lb`: the NFQUEUE daemon.
import type { Command } from "commander";
import { parseQueueRange, runDaemon } from "../dataplane/daemon.js";
import { LOG_LEVELS, Logger, parseLogLevel } from "../log/logger.js";
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
  loglevel: string;
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
    .option("--loglevel <level>", `log level: ${LOG_LEVELS.join(", ")}`, "notice")
    .action(
      action(async (opts: LbOptions) => {
        if (opts.invalid !== "drop" && opts.invalid !== "accept") {
          throw new CliError(`invalid --invalid "${opts.invalid}": expected drop or accept`);
        }
        let queues: number[];
        let level: number;
        try {
          queues = parseQueueRange(opts.queue);
          level = parseLogLevel(opts.loglevel);
        } catch (err) {
          throw new CliError((err as Error).message);
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
          },
          log,
        );
        process.exitCode = code;
      }),
    );
}
