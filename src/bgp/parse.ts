// Reading BIRD's control-socket replies (as `birdc -v` prints them). Pure.
//
// Every reply line starts with a 4-digit code and "-" (more follows) or " " (last line);
// continuation lines of the same code carry no code (birdc -v indents them by 5 spaces).
// 0xxx success, 1xxx table entry, 2xxx table heading, 8xxx run-time error, 9xxx parse
// error (BIRD's doc/reply_codes).

export interface ReplyLine {
  code: number;
  text: string;
}

const CODED = /^(\d{4})[ -](.*)$/;

export function parseReply(output: string): ReplyLine[] {
  const lines: ReplyLine[] = [];
  let code = 0;
  for (const raw of output.split("\n")) {
    if (raw === "" || raw.startsWith("+")) continue; // blank, or a spontaneous printout
    const m = CODED.exec(raw);
    if (m) {
      code = Number(m[1]);
      lines.push({ code, text: m[2] });
    } else {
      lines.push({ code, text: raw.startsWith("     ") ? raw.slice(5) : raw.replace(/^ /, "") });
    }
  }
  return lines;
}

/** The first error line (8xxx, 9xxx) of a reply. */
export function replyError(lines: readonly ReplyLine[]): ReplyLine | undefined {
  return lines.find((l) => l.code >= 8000);
}

/** One protocol from `show protocols all`. */
export interface ProtocolInfo {
  name: string;
  proto: string;
  table: string;
  /** BIRD's protocol state: "up", "start", "stop", "down", "flush". */
  state: string;
  /** BIRD's text for the time of the last state change. */
  since: string;
  info: string;
  /** BGP: "Established", "Active", "Connect", ...; from the details. */
  bgpState?: string;
  neighborAddress?: string;
  lastError?: string;
}

const SINCE =
  /^(\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}:\d{2}(?:\.\d+)?)?|\d{2}:\d{2}:\d{2}(?:\.\d+)?)\s*(.*)$/;

function parseRow(text: string): ProtocolInfo | undefined {
  const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$/.exec(text);
  if (!m) return undefined;
  const rest = m[5].trimEnd();
  // The time may hold a space (iso long); a custom format is taken as one word.
  const t = SINCE.exec(rest) ?? /^(\S+)\s*(.*)$/.exec(rest);
  return {
    name: m[1],
    proto: m[2],
    table: m[3],
    state: m[4],
    since: t?.[1] ?? "",
    info: (t?.[2] ?? "").trim(),
  };
}

/** Protocols of a `show protocols [all]` reply, with BGP details when present. */
export function parseProtocols(lines: readonly ReplyLine[]): ProtocolInfo[] {
  const out: ProtocolInfo[] = [];
  let current: ProtocolInfo | undefined;
  for (const l of lines) {
    if (l.code === 1002) {
      current = parseRow(l.text);
      if (current) out.push(current);
    } else if (l.code === 1006 && current) {
      const m = /^\s*([A-Za-z][A-Za-z ]*?):\s+(.*)$/.exec(l.text);
      if (!m) continue;
      const [, key, value] = m;
      if (key === "BGP state") current.bgpState = value.trim();
      else if (key === "Neighbor address") current.neighborAddress = value.trim();
      else if (key === "Last error") current.lastError = value.trim();
    }
  }
  return out;
}

/** BFD session states by neighbour address, from `show bfd sessions`. */
export function parseBfdSessions(lines: readonly ReplyLine[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of lines) {
    if (l.code !== 1020) continue;
    // "10.99.0.1                 eth0       Up         18:36:07.669    0.100    0.300"
    const m = /^\s*([0-9A-Fa-f.:]+)\s+\S+\s+(\S+)\s/.exec(l.text);
    if (m && /[.:]/.test(m[1]) && m[1].length > 2) out.set(m[1], m[2]);
  }
  return out;
}

/**
 * Epoch ms of a BIRD time text, in the local time zone BIRD prints in (its formats: "iso
 * short ms" by default — time of day for the last 20 hours, a date before that — or
 * "iso long [ms|us]"). A time of day is today's, or yesterday's if that would be in the
 * future. undefined for a format it cannot read.
 */
export function parseBirdTime(text: string, nowMs: number): number | undefined {
  let m = /^(\d{4})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?$/.exec(text);
  if (m) {
    const [, y, mo, d, h = "0", mi = "0", s = "0", frac = "0"] = m;
    return new Date(+y, +mo - 1, +d, +h, +mi, +s, fractionMs(frac)).getTime();
  }
  m = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(text);
  if (!m) return undefined;
  const [, h, mi, s, frac = "0"] = m;
  const now = new Date(nowMs);
  const at = new Date(
    now.getFullYear(),
    now.getMonth(),
    now.getDate(),
    +h,
    +mi,
    +s,
    fractionMs(frac),
  );
  // A second of slack: BIRD's clock and ours read the same wall time a moment apart.
  if (at.getTime() > nowMs + 1000) at.setDate(at.getDate() - 1);
  return at.getTime();
}

const fractionMs = (digits: string) => Math.floor(Number(`0.${digits}`) * 1000);
