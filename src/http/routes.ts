// Which route a request is for, from its method and path: a pure table, so every route
// and every refusal (unknown path, wrong method, malformed target) is tested without a
// socket.
import { ROUTES, TARGET_ACTIONS, type TargetAction } from "../dashboard/page/protocol.js";

export type Route =
  | { kind: "asset"; path: string }
  | { kind: "status" }
  | { kind: "history" }
  | { kind: "events" }
  | { kind: "metrics" }
  | { kind: "healthz" }
  | { kind: "readyz" }
  | { kind: "action"; service: string; fwmark: number; action: TargetAction };

export type RouteMatch =
  | { ok: true; route: Route }
  | { ok: false; status: 400 | 404 | 405; message: string; allow?: string };

const READ_ROUTES: Record<string, Route> = {
  [ROUTES.status]: { kind: "status" },
  [ROUTES.history]: { kind: "history" },
  [ROUTES.events]: { kind: "events" },
  [ROUTES.metrics]: { kind: "metrics" },
  [ROUTES.healthz]: { kind: "healthz" },
  [ROUTES.readyz]: { kind: "readyz" },
};

/** Service names as the state and the config name them, with room to spare. */
const SERVICE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function isRead(method: string): boolean {
  return method === "GET" || method === "HEAD";
}

function matchAction(method: string, rest: string): RouteMatch {
  const parts = rest.split("/");
  const action = parts[2] as TargetAction;
  if (parts.length !== 3 || !TARGET_ACTIONS.includes(action)) {
    return {
      ok: false,
      status: 404,
      message: `no such action: expected SERVICE/FWMARK/(${TARGET_ACTIONS.join("|")})`,
    };
  }
  if (method !== "POST") {
    return { ok: false, status: 405, message: "actions are POST only", allow: "POST" };
  }
  let service: string;
  try {
    service = decodeURIComponent(parts[0]);
  } catch {
    return { ok: false, status: 400, message: "malformed service name" };
  }
  if (!SERVICE_PATTERN.test(service)) {
    return { ok: false, status: 400, message: `invalid service name "${service}"` };
  }
  const fwmark = /^[0-9]{1,10}$/.test(parts[1]) ? Number(parts[1]) : Number.NaN;
  if (!(fwmark >= 1 && fwmark <= 0xffffffff)) {
    return {
      ok: false,
      status: 400,
      message: `invalid fwmark "${parts[1]}": expected 1..4294967295`,
    };
  }
  return { ok: true, route: { kind: "action", service, fwmark, action } };
}

export function matchRoute(
  method: string,
  pathname: string,
  assets: ReadonlySet<string>,
): RouteMatch {
  if (pathname.startsWith(ROUTES.targets)) {
    return matchAction(method, pathname.slice(ROUTES.targets.length));
  }
  const route =
    READ_ROUTES[pathname] ?? (assets.has(pathname) ? { kind: "asset", path: pathname } : undefined);
  if (!route) return { ok: false, status: 404, message: `no such page: ${pathname}` };
  if (!isRead(method)) {
    return { ok: false, status: 405, message: `${method} is not allowed here`, allow: "GET, HEAD" };
  }
  return { ok: true, route };
}
