// Who may use the endpoint: one pure decision per request, from the request's headers
// and the endpoint's policy.
//
// - Bound on loopback, only this machine can connect, so no token is needed; but the
//   Host header must name loopback, or a web page whose name was re-pointed at 127.0.0.1
//   (DNS rebinding) could read the status and act as if it were the dashboard.
// - Bound anywhere else, every request needs the token: `Authorization: Bearer` (curl,
//   Prometheus), the cookie the page gets (browsers, EventSource), or `?token=` on a GET
//   (the URL `nflb dashboard-url` prints; the page then trades it for the cookie).
// - Actions (POST) also need the action header, which a cross-site page cannot send
//   without a CORS preflight the endpoint never grants, and a same-origin Origin and
//   Sec-Fetch-Site when the browser sends them. The cookie is SameSite=Strict and
//   HttpOnly, so another site's requests never carry it and scripts never see it.
import { createHash, timingSafeEqual } from "node:crypto";
import { ACTION_HEADER } from "../dashboard/page/protocol.js";
import { isLoopbackHostHeader } from "./address.js";

export interface AuthPolicy {
  /** Every request must carry the token. */
  tokenRequired: boolean;
  /** Requests must name a loopback host in their Host header. */
  loopbackHostOnly: boolean;
  token: string;
  cookieName: string;
}

/** What the decision reads from a request. */
export interface RequestFacts {
  method: string;
  /** A POST that changes state. */
  isAction: boolean;
  host?: string;
  authorization?: string;
  cookie?: string;
  /** `?token=` of the URL. */
  queryToken?: string;
  origin?: string;
  secFetchSite?: string;
  actionHeader?: string;
}

export type AuthDecision =
  | { allow: true; via: "open" | "bearer" | "cookie" | "query" }
  | { allow: false; status: 401 | 403; reason: string };

function sameSecret(a: string, b: string): boolean {
  // Hash first: equal lengths for timingSafeEqual, and no early exit on a length mismatch.
  const da = createHash("sha256").update(a).digest();
  const db = createHash("sha256").update(b).digest();
  return timingSafeEqual(da, db);
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function bearerToken(header: string | undefined): string | undefined {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m ? m[1] : undefined;
}

function checkToken(policy: AuthPolicy, req: RequestFacts): AuthDecision {
  const readOnly = req.method === "GET" || req.method === "HEAD";
  const offered: Array<["bearer" | "cookie" | "query", string | undefined]> = [
    ["bearer", bearerToken(req.authorization)],
    ["cookie", cookieValue(req.cookie, policy.cookieName)],
    // A token in a URL ends up in histories and logs: only for reading, never for actions.
    ["query", readOnly ? req.queryToken : undefined],
  ];
  let wrong = false;
  for (const [via, token] of offered) {
    if (token === undefined || token === "") continue;
    if (sameSecret(token, policy.token)) return { allow: true, via };
    wrong = true;
  }
  return {
    allow: false,
    status: 401,
    reason: wrong ? "wrong token" : "token required (see nflb dashboard-url)",
  };
}

function checkSameOrigin(req: RequestFacts): AuthDecision | undefined {
  if (!req.actionHeader) {
    return { allow: false, status: 403, reason: `actions need the ${ACTION_HEADER} header` };
  }
  if (req.origin !== undefined && req.origin !== `http://${req.host}`) {
    return { allow: false, status: 403, reason: "cross-site request refused" };
  }
  const site = req.secFetchSite;
  if (site !== undefined && site !== "same-origin" && site !== "none") {
    return { allow: false, status: 403, reason: "cross-site request refused" };
  }
  return undefined;
}

export function authorize(policy: AuthPolicy, req: RequestFacts): AuthDecision {
  if (policy.loopbackHostOnly && !isLoopbackHostHeader(req.host)) {
    return { allow: false, status: 403, reason: "this endpoint answers only to a loopback host" };
  }
  const token: AuthDecision = policy.tokenRequired
    ? checkToken(policy, req)
    : { allow: true, via: "open" };
  if (!token.allow) return token;
  if (req.isAction) return checkSameOrigin(req) ?? token;
  return token;
}
