// The wire protocol between the HTTP endpoint (src/http/) and the dashboard page: routes,
// payloads and the header that makes an action request. Shared by both sides, so it is
// plain declarations and constants (no DOM, no Node): the server compiles it with the
// rest of nflb, the page's build compiles it for the browser.
import type { StatusSnapshot, TargetHistory, TargetSample } from "../../service/status.js";

export const ROUTES = {
  page: "/",
  status: "/api/status",
  history: "/api/history",
  events: "/api/events",
  /** POST /api/targets/SERVICE/FWMARK/ACTION */
  targets: "/api/targets/",
  metrics: "/metrics",
  healthz: "/healthz",
  readyz: "/readyz",
  assets: "/assets/",
} as const;

export const TARGET_ACTIONS = ["drain", "disable", "enable"] as const;
export type TargetAction = (typeof TARGET_ACTIONS)[number];

/**
 * Every action request carries this header. A cross-site page can only send it after a
 * CORS preflight, which the endpoint never grants, so a forged form or image request
 * from another site cannot change anything.
 */
export const ACTION_HEADER = "x-nflb-action";

/** Name of the server-sent event that carries a LiveUpdate. */
export const LIVE_EVENT = "status";

export interface HistoryResponse {
  /** How far back the samples go, and the spacing the endpoint aims at. */
  windowMs: number;
  stepMs: number;
  targets: TargetHistory[];
}

export interface LiveSample extends TargetSample {
  service: string;
  fwmark: number;
}

/** One server-sent event: the whole snapshot and the newest sample of each target. */
export interface LiveUpdate {
  snapshot: StatusSnapshot;
  samples: LiveSample[];
}

export type ActionResponse =
  | { ok: true; action: TargetAction; service: string; fwmark: number }
  | { ok: false; error: string };

export function targetActionPath(service: string, fwmark: number, action: TargetAction): string {
  return `${ROUTES.targets}${encodeURIComponent(service)}/${fwmark}/${action}`;
}
