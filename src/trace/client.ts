// The client side of the control protocol: `nflb trace` and the tests.
import { connect, type Socket } from "node:net";

export type ControlTarget = { path: string } | { host: string; port: number };

export function describeTarget(t: ControlTarget): string {
  return "path" in t ? t.path : `${t.host}:${t.port}`;
}

export class ControlError extends Error {
  override name = "ControlError";
}

/** Connects; rejects with a ControlError that says whether a daemon is there at all. */
export function connectControl(target: ControlTarget, timeoutMs = 5000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = "path" in target ? connect(target.path) : connect(target.port, target.host);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new ControlError(`no answer from ${describeTarget(target)}`));
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(timer);
      s.removeAllListeners("error");
      resolve(s);
    });
    s.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const code = err.code ?? "";
      const none = code === "ENOENT" || code === "ECONNREFUSED";
      reject(
        new ControlError(
          none
            ? `no daemon answers on ${describeTarget(target)} (${code})`
            : `cannot connect to ${describeTarget(target)}: ${err.message}`,
        ),
      );
    });
  });
}

/**
 * Reads the connection's lines: the first is the answer to the request, passed to
 * onAnswer; the rest (a trace stream) go to onData as they come, whole lines only.
 */
export class LineReader {
  private buffered = "";
  private answered = false;

  constructor(
    private readonly onAnswer: (answer: Record<string, unknown>) => void,
    private readonly onData: (text: string) => void,
  ) {}

  push(chunk: string): void {
    let text = this.buffered + chunk;
    if (!this.answered) {
      const nl = text.indexOf("\n");
      if (nl < 0) {
        this.buffered = text;
        return;
      }
      this.answered = true;
      const line = text.slice(0, nl);
      text = text.slice(nl + 1);
      let answer: Record<string, unknown>;
      try {
        answer = JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new ControlError(`not an nflb control endpoint: answered "${line.slice(0, 80)}"`);
      }
      this.onAnswer(answer);
    }
    const last = text.lastIndexOf("\n");
    if (last < 0) {
      this.buffered = text;
      return;
    }
    this.buffered = text.slice(last + 1);
    this.onData(text.slice(0, last + 1));
  }
}

/** Sends one request and resolves with its answer line (ping, status). */
export async function controlRequest(
  target: ControlTarget,
  request: Record<string, unknown>,
  timeoutMs = 5000,
): Promise<Record<string, unknown>> {
  const s = await connectControl(target, timeoutMs);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      s.destroy();
      reject(new ControlError(`no answer from ${describeTarget(target)}`));
    }, timeoutMs);
    const reader = new LineReader(
      (answer) => {
        clearTimeout(timer);
        s.destroy();
        if (answer.ok === true) resolve(answer);
        else reject(new ControlError(String(answer.error ?? "request refused")));
      },
      () => {},
    );
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      try {
        reader.push(d);
      } catch (err) {
        clearTimeout(timer);
        s.destroy();
        reject(err);
      }
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      reject(new ControlError(`${describeTarget(target)} closed the connection`));
    });
    s.write(`${JSON.stringify(request)}\n`);
  });
}
