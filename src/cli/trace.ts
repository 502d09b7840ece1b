// loglevel, trace and the trace flows (registered with the flow commands' code): seeing
// what a running daemon does, without stopping it.
import type { Command } from "commander";
import { LEVEL_VALUE, LOG_LEVELS, levelName, parseLogLevel } from "../log/logger.js";
import { controlSocketPath } from "../paths.js";
import { openState } from "../state/store.js";
import {
  ControlError,
  type ControlTarget,
  connectControl,
  describeTarget,
  LineReader,
} from "../trace/client.js";
import {
  parseMask,
  parseSelection,
  SelectionError,
  TRACE_KINDS,
  TraceBit,
} from "../trace/kinds.js";
import { parseHostPort } from "../trace/paths.js";
import { traceRequestLine } from "../trace/protocol.js";
import { action, addNameOption, CliError } from "./common.js";
import { registerTraceFlowCommands } from "./flows.js";

interface TraceOptions {
  name: string;
  selection?: string;
  mask?: string;
  json?: boolean;
  tcp?: string;
  socket?: string;
}

function traceMaskOf(opts: TraceOptions): number {
  if (opts.selection !== undefined && opts.mask !== undefined) {
    throw new CliError("give --selection or --mask, not both");
  }
  try {
    if (opts.mask !== undefined) return parseMask(opts.mask);
    if (opts.selection !== undefined) return parseSelection(opts.selection);
  } catch (err) {
    if (err instanceof SelectionError) throw new CliError(err.message);
    throw err;
  }
  return TraceBit.log;
}

function controlTarget(opts: TraceOptions): ControlTarget {
  if (opts.tcp !== undefined && opts.socket !== undefined) {
    throw new CliError("give --tcp or --socket, not both");
  }
  if (opts.tcp !== undefined) {
    try {
      return parseHostPort(opts.tcp);
    } catch (err) {
      throw new CliError(`--tcp: ${(err as Error).message}`);
    }
  }
  return { path: opts.socket ?? controlSocketPath(opts.name) };
}

/** Streams trace lines to stdout until SIGINT (exit 0) or the daemon goes away (exit 1). */
async function runTrace(opts: TraceOptions): Promise<void> {
  const mask = traceMaskOf(opts);
  const target = controlTarget(opts);
  let socket: Awaited<ReturnType<typeof connectControl>>;
  try {
    socket = await connectControl(target);
  } catch (err) {
    const hint =
      "path" in target && opts.socket === undefined
        ? ` (is "nflb lb --name ${opts.name}" running in this network namespace?)`
        : "";
    throw new CliError(`${(err as Error).message}${hint}`);
  }
  let ending = false;
  const quit = () => {
    ending = true;
    socket.destroy();
    process.exit(0);
  };
  process.on("SIGINT", quit);
  process.on("SIGTERM", quit);
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    // The reader went away (`nflb trace | head`): that ends the trace, not an error.
    if (err.code === "EPIPE") quit();
  });
  await new Promise<void>((_resolve, reject) => {
    let answered = false;
    const reader = new LineReader(
      (answer) => {
        if (answer.ok !== true) {
          reject(new CliError(`the daemon refused: ${String(answer.error ?? "unknown error")}`));
          socket.destroy();
          return;
        }
        answered = true;
      },
      (text) => {
        if (!process.stdout.write(text)) {
          socket.pause();
          process.stdout.once("drain", () => socket.resume());
        }
      },
    );
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      try {
        reader.push(chunk);
      } catch (err) {
        reject(err instanceof ControlError ? new CliError(err.message) : err);
        socket.destroy();
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      if (ending) return;
      reject(
        new CliError(
          answered
            ? `the daemon went away (${describeTarget(target)})`
            : `${describeTarget(target)} closed the connection without an answer`,
        ),
      );
    });
    socket.write(traceRequestLine(mask, opts.json === true));
  });
}

export function registerTraceCommands(program: Command): void {
  addNameOption(
    program
      .command("loglevel")
      .description(
        "read or set the log level of a load balancer's daemon (shared state: a running daemon follows at once)",
      )
      .argument("[level]", `new level: ${LOG_LEVELS.join(", ")}`),
  ).action(
    action((level: string | undefined, opts: { name: string }) => {
      let value: number | undefined;
      if (level !== undefined) {
        try {
          value = parseLogLevel(level);
        } catch (err) {
          throw new CliError((err as Error).message);
        }
      }
      const state = openState(opts.name);
      try {
        if (value === undefined) {
          const stored = state.logLevel();
          process.stdout.write(`${levelName(stored >= 0 ? stored : LEVEL_VALUE.notice)}\n`);
        } else {
          state.setLogLevel(value);
          process.stdout.write(`log level ${levelName(value)}\n`);
        }
      } finally {
        state.close();
      }
    }),
  );

  addNameOption(
    program
      .command("trace")
      .description(
        "attach to a running daemon and print its trace until interrupted (packet lines need trace flows: trace-flow-set)",
      ),
  )
    .option(
      "--selection <kinds>",
      `what to trace, comma-separated: ${TRACE_KINDS.join(", ")} (default log)`,
    )
    .option(
      "--mask <hex>",
      `the same as a bit mask: ${TRACE_KINDS.map((k, i) => `${k}=0x${(1 << i).toString(16)}`).join(" ")}`,
    )
    .option("--json", "one JSON object per line")
    .option(
      "--tcp <[host:]port>",
      "connect to the daemon's TCP control endpoint (lb --control-tcp)",
    )
    .option(
      "--socket <path>",
      "control socket path (default: the daemon's in this network namespace)",
    )
    .action(action((opts: TraceOptions) => runTrace(opts)));

  registerTraceFlowCommands(program);
}
