// http and https: one request on a fresh connection, the status must be in a range and,
// if asked, the first 64 KiB of the body must match a regular expression. https verifies
// nothing by default (targets are reached by address) and sends SNI only when told.
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import type { HttpCheck } from "../spec.js";
import { attempt, describeError, type ProbeOutcome, regexOf } from "./attempt.js";

/** How much of the body a body check reads. */
export const BODY_LIMIT = 64 * 1024;

function defaultHost(address: string, port: number, https: boolean): string {
  const host = isIP(address) === 6 ? `[${address}]` : address;
  return port === (https ? 443 : 80) ? host : `${host}:${port}`;
}

function statusOk(status: number, spec: HttpCheck): boolean {
  return spec.expectStatus.some(([lo, hi]) => status >= lo && status <= hi);
}

export function probeHttp(
  address: string,
  port: number,
  spec: HttpCheck,
  signal?: AbortSignal,
): Promise<ProbeOutcome> {
  const https = spec.kind === "https";
  return attempt(spec.timeoutMs, signal, (finish, onDone) => {
    const options = {
      host: address,
      port,
      method: spec.method,
      path: spec.path,
      localAddress: spec.source,
      agent: false as const,
      headers: {
        host: spec.host ?? defaultHost(address, port, https),
        "user-agent": "nflb-health",
        accept: "*/*",
        connection: "close",
      },
    };
    const req = https
      ? httpsRequest({
          ...options,
          rejectUnauthorized: spec.verify,
          // "" sends no SNI: Node would otherwise derive one from the Host header.
          servername: spec.sni ?? "",
        })
      : httpRequest(options);
    onDone(() => req.destroy());
    req.on("error", (err) => finish(false, describeError(err)));
    req.on("response", (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      if (!statusOk(status, spec)) return finish(false, `status ${status}`);
      if (spec.expectBody === undefined) return finish(true, `status ${status}`);
      const re = regexOf(spec.expectBody);
      const chunks: Buffer[] = [];
      let length = 0;
      const judge = () => {
        const body = Buffer.concat(chunks).subarray(0, BODY_LIMIT).toString("utf8");
        const matches = re.test(body);
        finish(matches, matches ? `status ${status}` : "body mismatch");
      };
      res.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        length += chunk.length;
        if (length >= BODY_LIMIT) judge();
      });
      res.on("end", judge);
      res.on("error", (err) => finish(false, describeError(err)));
    });
    req.end();
  });
}
