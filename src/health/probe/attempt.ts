// The frame every probe runs in: one deadline, one way to cancel, one verdict (the first
// one wins), cleanup that always runs, and no exception ever escapes to the checker.
import { performance } from "node:perf_hooks";

/** What a probe found, before the checker stamps it with a time. */
export interface ProbeOutcome {
  ok: boolean;
  reason: string;
  latencyMs: number;
}

export type Finish = (ok: boolean, reason: string) => void;

/**
 * Runs `body` until it calls `finish`, the timeout passes ("timeout") or `signal` aborts
 * ("cancelled"). `body` registers cleanups (close a socket, kill a process) with `onDone`;
 * they run once, right after the verdict. A throw from `body` is a failed probe.
 */
export function attempt(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  body: (finish: Finish, onDone: (cleanup: () => void) => void) => void,
): Promise<ProbeOutcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const cleanups: (() => void)[] = [];
    let done = false;
    const finish: Finish = (ok, reason) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      for (const cleanup of cleanups) {
        try {
          cleanup();
        } catch {
          // a socket already closed or a process already gone: nothing left to clean
        }
      }
      resolve({ ok, reason, latencyMs: performance.now() - started });
    };
    const onAbort = () => finish(false, "cancelled");
    const timer = setTimeout(() => finish(false, "timeout"), timeoutMs);
    if (signal?.aborted) return finish(false, "cancelled");
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      body(finish, (cleanup) => {
        if (done) cleanup();
        else cleanups.push(cleanup);
      });
    } catch (err) {
      finish(false, describeError(err));
    }
  });
}

const ERRNO_REASONS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EPIPE: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EADDRNOTAVAIL: "source address not available",
  EACCES: "permission denied",
  EPERM: "not permitted (firewall?)",
  ETIMEDOUT: "timeout",
  ECONNABORTED: "connection aborted",
};

/** A short reason for an error from a socket, TLS or HTTP parser. */
export function describeError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const code = typeof e?.code === "string" ? e.code : undefined;
  if (code && ERRNO_REASONS[code]) return ERRNO_REASONS[code];
  if (code?.startsWith("HPE_")) return "bad http response";
  if (
    code?.startsWith("ERR_SSL_") ||
    code?.startsWith("ERR_TLS_") ||
    /CERT|SELF_SIGNED/.test(code ?? "")
  ) {
    return `tls: ${code}`;
  }
  if (code === "ERR_STREAM_PREMATURE_CLOSE") return "connection closed early";
  const text = code ?? e?.message ?? String(err);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

const compiled = new Map<string, RegExp>();

/** Compiles each expression once (checks repeat every few seconds for days). */
export function regexOf(source: string): RegExp {
  let re = compiled.get(source);
  if (!re) {
    if (compiled.size >= 1000) compiled.clear();
    re = new RegExp(source);
    compiled.set(source, re);
  }
  return re;
}
