// Talking to BIRD: `birdc` for commands on the control socket, `bird -p` to parse-check
// a configuration. I/O. Every failure becomes a BgpError whose kind says what to do:
// install BIRD (missing), start it (down), fix permissions (denied), fix the config
// (refused).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findTool } from "../netfilter/sys.js";
import { parseReply, type ReplyLine, replyError } from "./parse.js";
import { BgpError } from "./types.js";

export interface BirdTools {
  /** Path of birdc; default: found in PATH (and the sbin directories). */
  birdc?: string;
  /** Path of bird (for parse checks); default: found likewise. */
  bird?: string;
}

const INSTALL_HINT = "(Debian: apt-get install bird2)";

interface Exec {
  status: number;
  stdout: string;
  stderr: string;
  /** The executable does not exist. */
  enoent: boolean;
  timedOut: boolean;
}

function exec(file: string, args: readonly string[], timeoutMs: number): Promise<Exec> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: "utf8", timeout: timeoutMs }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: unknown }) | null;
      resolve({
        status: e ? (typeof e.code === "number" ? e.code : 1) : 0,
        stdout,
        stderr,
        enoent: e?.code === "ENOENT",
        timedOut: !!e?.killed,
      });
    });
  });
}

function tool(name: "birdc" | "bird", override?: string): string {
  const path = override ?? findTool(name);
  if (!path)
    throw new BgpError("missing", `BIRD is not installed: ${name} not found ${INSTALL_HINT}`);
  return path;
}

/** Throws BgpError("missing") unless both birdc and bird can be found. */
export function requireBird(options: BirdTools = {}): void {
  for (const [name, override] of [
    ["birdc", options.birdc],
    ["bird", options.bird],
  ] as const) {
    const path = tool(name, override);
    if (override !== undefined && !existsSync(path)) {
      throw new BgpError("missing", `BIRD is not installed: ${path} not found ${INSTALL_HINT}`);
    }
  }
}

/** birdc's own failure to connect, as one clear line. */
function connectError(socket: string, text: string): BgpError | undefined {
  const m = /Unable to connect to server control socket \([^)]*\): (.*)/.exec(text);
  if (!m) return undefined;
  const why = m[1].trim();
  if (/No such file|Connection refused|Not a directory/i.test(why)) {
    const detail = /refused/i.test(why)
      ? `control socket ${socket} refuses connections (a stale socket?)`
      : `no control socket at ${socket}`;
    return new BgpError("down", `BIRD is not running: ${detail}`);
  }
  if (/Permission denied/i.test(why)) {
    return new BgpError("denied", `BIRD's control socket ${socket}: permission denied`);
  }
  return new BgpError("down", `BIRD's control socket ${socket}: ${why}`);
}

/**
 * Runs one command on BIRD's control socket; returns the reply lines (errors of the
 * command itself, 8xxx/9xxx, are in them: see replyError). Throws BgpError when BIRD
 * cannot be reached.
 */
export async function birdc(
  socket: string,
  command: readonly string[],
  options: BirdTools & { timeoutMs?: number } = {},
): Promise<ReplyLine[]> {
  const file = tool("birdc", options.birdc);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const r = await exec(file, ["-s", socket, "-v", ...command], timeoutMs);
  if (r.enoent)
    throw new BgpError("missing", `BIRD is not installed: ${file} not found ${INSTALL_HINT}`);
  if (r.timedOut) {
    throw new BgpError(
      "io",
      `birdc ${command.join(" ")}: no answer from BIRD within ${timeoutMs} ms`,
    );
  }
  const all = `${r.stdout}\n${r.stderr}`;
  const unreachable = connectError(socket, all);
  if (unreachable) throw unreachable;
  const lines = parseReply(r.stdout);
  if (lines.length === 0) {
    throw new BgpError(
      "io",
      `birdc ${command.join(" ")}: no reply (${oneLine(all) || `exit ${r.status}`})`,
    );
  }
  return lines;
}

const oneLine = (s: string) => s.trim().split("\n").filter(Boolean).join("; ");

/**
 * Asks BIRD to re-read its configuration (which includes nflb's file). Resolves when
 * BIRD took it; throws BgpError("refused") with BIRD's one-line message when it keeps
 * the old one, and the errors of birdc() when it cannot be reached.
 */
export async function configure(socket: string, options: BirdTools = {}): Promise<void> {
  const lines = await birdc(socket, ["configure"], options);
  const err = replyError(lines);
  if (err) throw new BgpError("refused", `BIRD refuses the configuration: ${err.text}`);
  // 3 reconfigured, 4 in progress, 5 queued: BIRD applies it; 6: it is shutting down.
  const done = lines.find((l) => [3, 4, 5, 17, 18, 19].includes(l.code));
  if (!done) {
    const last = lines[lines.length - 1];
    throw new BgpError(
      "io",
      `BIRD did not reconfigure: ${last ? `${last.code} ${last.text}` : "no reply"}`,
    );
  }
}

/**
 * Parse-checks an include file's text with `bird -p`, inside a throwaway main file, so a
 * mistake shows before BIRD (or the operator's running configuration) sees it. Throws
 * BgpError("invalid") with BIRD's message.
 */
export async function parseCheck(text: string, options: BirdTools = {}): Promise<void> {
  const file = tool("bird", options.bird);
  const dir = await mkdtemp(join(tmpdir(), "nflb-bird-"));
  try {
    const include = join(dir, "nflb.conf");
    const main = join(dir, "bird.conf");
    await writeFile(include, text, { mode: 0o600 });
    // A router id of its own: the check must not depend on this host's addresses.
    await writeFile(main, `router id 192.0.2.1;\ninclude "${include}";\n`, { mode: 0o600 });
    const r = await exec(file, ["-p", "-c", main], 10_000);
    if (r.enoent)
      throw new BgpError("missing", `BIRD is not installed: ${file} not found ${INSTALL_HINT}`);
    if (r.status !== 0) {
      const msg = oneLine(r.stderr || r.stdout).replace(/^bird: /, "");
      throw new BgpError("invalid", `BIRD rejects the rendered configuration: ${msg}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
