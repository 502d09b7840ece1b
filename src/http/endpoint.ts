// The HTTP endpoint of the running service: the dashboard (page, status, history, live
// stream, target actions), /metrics, /healthz and /readyz on one listening socket.
//
// It owns no state of the service: it reads a StatusSource, calls TargetActions, and
// asks providers for the metrics text and the probes. Once a second it takes a snapshot,
// turns the counters into per-target rates (the history ring) and pushes the snapshot to
// every live client. Everything is bounded: request sizes, live clients, history memory.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { Counter, Gauge, Registry } from "prom-client";
import { type Asset, loadDashboardAssets } from "../dashboard/assets.js";
import {
  ACTION_HEADER,
  type ActionResponse,
  type HistoryResponse,
  LIVE_EVENT,
  type LiveUpdate,
  ROUTES,
} from "../dashboard/page/protocol.js";
import { Logger } from "../log/logger.js";
import type { StatusSnapshot } from "../service/status.js";
import {
  DEFAULT_HTTP_HOST,
  DEFAULT_HTTP_PORT,
  dashboardUrl,
  endpointOrigin,
  isLoopbackHost,
  type ListenAddress,
  parseListen,
} from "./address.js";
import { type AuthPolicy, authorize, type RequestFacts } from "./auth.js";
import { type HistoryOptions, TargetHistoryRing } from "./history.js";
import { removeEndpointRecord, writeEndpointRecord } from "./record.js";
import { matchRoute, type Route } from "./routes.js";
import { SseHub } from "./sse.js";
import { loadOrCreateToken } from "./token.js";

/** What the service knows about itself, now. Called about once a second and per request. */
export interface StatusSource {
  snapshot(): StatusSnapshot;
}

/** The same state changes as `nflb target drain|disable|enable`. Throw to refuse. */
export interface TargetActions {
  drain(service: string, fwmark: number): void | Promise<void>;
  disable(service: string, fwmark: number): void | Promise<void>;
  enable(service: string, fwmark: number): void | Promise<void>;
}

/** The /metrics text; a prom-client Registry is one. */
export interface MetricsProvider {
  readonly contentType: string;
  metrics(): string | Promise<string>;
}

export interface ProbeResult {
  ok: boolean;
  /** One line for the response body. */
  detail: string;
}
export type Probe = () => ProbeResult | Promise<ProbeResult>;

/** Where the endpoint logs; nflb's Logger is one. */
export interface EndpointLog {
  warning(message: string): void;
  notice(message: string): void;
}

export interface HttpEndpointOptions {
  source: StatusSource;
  actions: TargetActions;
  /** "HOST:PORT", "[V6]:PORT", "PORT" or an address; default 127.0.0.1:9473. Port 0: any free one. */
  listen?: string | ListenAddress;
  /** Default: the endpoint's own registry (`registry`: requests, live clients). */
  metrics?: MetricsProvider;
  /** Default: always ok ("alive"). */
  healthz?: Probe;
  /** Default: ok when the snapshot has services and every one is ready. */
  readyz?: Probe;
  /** Default: required unless bound on loopback. */
  requireToken?: boolean;
  /** The token; default: read from (or created in) `tokenFile`, only when required. */
  token?: string;
  /** Default: dashboardTokenPath() (NFLB_HTTP_TOKEN_FILE, else /var/lib/nflb/http-token). */
  tokenFile?: string;
  /** Where to leave the running endpoint's address for `nflb dashboard-url`; false: nowhere. Default: endpointRecordPath(). */
  record?: string | false;
  /** Snapshot, history sample and live update period (default 1000 ms). */
  tickMs?: number;
  /** The ring to keep rates in, or its options (default: 15 minutes at tickMs, 512 targets). */
  history?: TargetHistoryRing | HistoryOptions;
  /** Live clients at once (default 32); more get 503. */
  maxLiveClients?: number;
  /** Epoch milliseconds; tests move time. Default Date.now. */
  clock?: () => number;
  log?: EndpointLog;
}

const MAX_URL_BYTES = 2048;
const MAX_BODY_BYTES = 1024;
const MAX_LIVE_BUFFER = 1 << 20;
const GZIP_MIN_BYTES = 1024;

const SECURITY_HEADERS: Record<string, string> = {
  "X-Content-Type-Options": "nosniff",
  // The action buttons must never be framed by another page (clickjacking).
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Content-Security-Policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
};

function acceptsGzip(req: IncomingMessage): boolean {
  return /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Default readiness: the service has services and each one is ready. */
function readyFromSnapshot(snapshot: StatusSnapshot): ProbeResult {
  if (snapshot.services.length === 0) return { ok: false, detail: "no service configured" };
  const notReady = snapshot.services.filter((s) => !s.ready).map((s) => s.name);
  return notReady.length === 0
    ? { ok: true, detail: "ready" }
    : { ok: false, detail: `not ready: ${notReady.join(", ")}` };
}

export class HttpEndpoint {
  /** The endpoint's own metrics; served at /metrics unless another provider is given. */
  readonly registry = new Registry();
  readonly history: TargetHistoryRing;
  readonly tokenRequired: boolean;
  private readonly listenAddress: ListenAddress;
  private readonly assets: Map<string, Asset>;
  private readonly assetPaths: ReadonlySet<string>;
  private readonly policy: AuthPolicy;
  private readonly hub: SseHub;
  private readonly server: Server;
  private readonly clock: () => number;
  private readonly log: EndpointLog;
  private readonly requests: Counter<"route" | "code">;
  private timer: NodeJS.Timeout | undefined;
  private bound: ListenAddress | undefined;
  private lastSnapshotError = "";

  constructor(private readonly options: HttpEndpointOptions) {
    const listen = options.listen ?? { host: DEFAULT_HTTP_HOST, port: DEFAULT_HTTP_PORT };
    this.listenAddress = typeof listen === "string" ? parseListen(listen) : listen;
    this.tokenRequired = options.requireToken ?? !isLoopbackHost(this.listenAddress.host);
    const token = this.tokenRequired
      ? (options.token ?? loadOrCreateToken(options.tokenFile).token)
      : (options.token ?? "");
    this.policy = {
      tokenRequired: this.tokenRequired,
      loopbackHostOnly: isLoopbackHost(this.listenAddress.host),
      token,
      cookieName: "nflb_token",
    };
    this.history =
      options.history instanceof TargetHistoryRing
        ? options.history
        : new TargetHistoryRing({ stepMs: options.tickMs, ...options.history });
    this.hub = new SseHub({
      maxClients: options.maxLiveClients ?? 32,
      maxBuffered: MAX_LIVE_BUFFER,
      retryMs: 2000,
    });
    this.clock = options.clock ?? Date.now;
    this.log = options.log ?? new Logger("nflb-http");
    this.assets = loadDashboardAssets();
    this.assetPaths = new Set(this.assets.keys());
    this.requests = new Counter({
      name: "nflb_http_requests_total",
      help: "HTTP requests answered by the endpoint, by route and status code",
      labelNames: ["route", "code"],
      registers: [this.registry],
    });
    const hub = this.hub;
    new Gauge({
      name: "nflb_http_live_clients",
      help: "Dashboard clients connected to the live stream",
      registers: [this.registry],
      collect() {
        this.set(hub.size);
      },
    });
    this.server = createServer(
      {
        maxHeaderSize: 8192,
        requestTimeout: 10_000,
        headersTimeout: 5_000,
        keepAliveTimeout: 5_000,
      },
      (req, res) => {
        this.handle(req, res).catch((err: unknown) => this.fail(res, err));
      },
    );
    this.server.maxConnections = (options.maxLiveClients ?? 32) + 64;
  }

  /** Listens, starts the once-a-second sampling, and leaves the record for dashboard-url. */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.listenAddress.port, this.listenAddress.host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const info = this.server.address() as AddressInfo;
    this.bound = { host: this.listenAddress.host, port: info.port };
    this.tick();
    this.timer = setInterval(() => this.tick(), this.options.tickMs ?? 1000);
    this.timer.unref();
    if (this.options.record !== false) {
      writeEndpointRecord(
        {
          version: 1,
          origin: this.origin,
          host: this.bound.host,
          port: this.bound.port,
          tokenRequired: this.tokenRequired,
          pid: process.pid,
        },
        this.options.record,
      );
    }
    this.log.notice(
      `dashboard and metrics on ${this.origin}/ (${this.tokenRequired ? "token required: nflb dashboard-url" : "loopback, no token"})`,
    );
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.hub.closeAll();
    if (this.bound && this.options.record !== false) removeEndpointRecord(this.options.record);
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** The address actually bound (the port chosen when 0 was asked). */
  get address(): ListenAddress {
    if (!this.bound) throw new Error("the HTTP endpoint is not started");
    return this.bound;
  }

  /** "http://127.0.0.1:9473" */
  get origin(): string {
    return endpointOrigin(this.address);
  }

  /** The URL to open: with the token when one is needed. */
  get url(): string {
    return dashboardUrl(this.address, this.tokenRequired ? this.policy.token : undefined);
  }

  /** Live clients now. */
  get liveClients(): number {
    return this.hub.size;
  }

  /** Pushes a fresh snapshot to every live client now (after an action, a reload). */
  publish(): void {
    if (this.hub.size === 0) return;
    const snapshot = this.trySnapshot();
    if (!snapshot) return;
    const update: LiveUpdate = { snapshot, samples: [] };
    this.hub.broadcast(LIVE_EVENT, JSON.stringify(update));
  }

  private tick(): void {
    const snapshot = this.trySnapshot();
    if (!snapshot) return;
    const samples = this.history.record(snapshot, this.clock());
    if (this.hub.size === 0) return;
    const update: LiveUpdate = { snapshot, samples };
    this.hub.broadcast(LIVE_EVENT, JSON.stringify(update));
  }

  private trySnapshot(): StatusSnapshot | undefined {
    try {
      const snapshot = this.options.source.snapshot();
      this.lastSnapshotError = "";
      return snapshot;
    } catch (err) {
      const message = (err as Error).message;
      // Once per distinct error, not once a second.
      if (message !== this.lastSnapshotError)
        this.log.warning(`status snapshot failed: ${message}`);
      this.lastSnapshotError = message;
      return undefined;
    }
  }

  private facts(req: IncomingMessage, url: URL, isAction: boolean): RequestFacts {
    return {
      method: req.method ?? "GET",
      isAction,
      host: header(req, "host"),
      authorization: header(req, "authorization"),
      cookie: header(req, "cookie"),
      queryToken: url.searchParams.get("token") ?? undefined,
      origin: header(req, "origin"),
      secFetchSite: header(req, "sec-fetch-site"),
      actionHeader: header(req, ACTION_HEADER),
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    if ((req.url ?? "").length > MAX_URL_BYTES) {
      return this.text(res, "other", 414, "URL too long\n");
    }
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://endpoint");
    } catch {
      return this.text(res, "other", 400, "malformed URL\n");
    }
    const match = matchRoute(method, url.pathname, this.assetPaths);
    const routeLabel = match.ok ? match.route.kind : "other";
    const decision = authorize(
      this.policy,
      this.facts(req, url, match.ok && match.route.kind === "action"),
    );
    if (!decision.allow) {
      const extra: Record<string, string> =
        decision.status === 401 ? { "WWW-Authenticate": 'Bearer realm="nflb"' } : {};
      return this.text(res, routeLabel, decision.status, `${decision.reason}\n`, extra);
    }
    if (!match.ok) {
      const extra: Record<string, string> = match.allow ? { Allow: match.allow } : {};
      return this.text(res, routeLabel, match.status, `${match.message}\n`, extra);
    }
    if (!(await this.bodyWithinLimit(req, res))) return;
    if (
      decision.via === "query" &&
      match.route.kind === "asset" &&
      match.route.path === ROUTES.page
    ) {
      // Trade the token in the URL for a cookie, and take it out of the address bar.
      this.requests.inc({ route: "asset", code: "303" });
      res.writeHead(303, {
        ...SECURITY_HEADERS,
        Location: ROUTES.page,
        "Cache-Control": "no-store",
        "Set-Cookie": `${this.policy.cookieName}=${this.policy.token}; Path=/; HttpOnly; SameSite=Strict`,
      });
      res.end();
      return;
    }
    await this.dispatch(req, res, match.route);
  }

  /** Reads (and drops) a request body of at most MAX_BODY_BYTES; false after a 413. */
  private async bodyWithinLimit(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      this.text(res, "other", 413, "request body too large\n", { Connection: "close" });
      req.destroy();
      return false;
    }
    let received = 0;
    for await (const chunk of req) {
      received += (chunk as Buffer).length;
      if (received > MAX_BODY_BYTES) {
        this.text(res, "other", 413, "request body too large\n", { Connection: "close" });
        req.destroy();
        return false;
      }
    }
    return true;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, route: Route): Promise<void> {
    switch (route.kind) {
      case "asset":
        return this.asset(req, res, route.path);
      case "status": {
        const snapshot = this.trySnapshot();
        if (!snapshot) return this.json(req, res, "status", 503, { error: this.lastSnapshotError });
        return this.json(req, res, "status", 200, snapshot);
      }
      case "history": {
        const body: HistoryResponse = {
          windowMs: this.history.windowMs,
          stepMs: this.history.stepMs,
          targets: this.history.history(this.clock()),
        };
        return this.json(req, res, "history", 200, body);
      }
      case "events":
        return this.live(req, res);
      case "metrics": {
        const provider = this.options.metrics ?? this.registry;
        const text = await provider.metrics();
        return this.text(res, "metrics", 200, text, { "Content-Type": provider.contentType });
      }
      case "healthz":
      case "readyz":
        return this.probe(res, route.kind);
      case "action":
        return this.action(req, res, route);
    }
  }

  private asset(req: IncomingMessage, res: ServerResponse, path: string): void {
    const asset = this.assets.get(path);
    if (!asset) {
      this.text(res, "asset", 404, "no such asset\n");
      return;
    }
    const headers: Record<string, string> = {
      ...SECURITY_HEADERS,
      "Content-Type": asset.contentType,
      "Cache-Control": "no-cache",
      ETag: asset.etag,
      Vary: "Accept-Encoding",
    };
    this.requests.inc({
      route: "asset",
      code: header(req, "if-none-match") === asset.etag ? "304" : "200",
    });
    if (header(req, "if-none-match") === asset.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const gzip = acceptsGzip(req);
    if (gzip) headers["Content-Encoding"] = "gzip";
    const body = gzip ? asset.gzip : asset.body;
    headers["Content-Length"] = String(body.length);
    res.writeHead(200, headers);
    res.end(body);
  }

  private live(req: IncomingMessage, res: ServerResponse): void {
    if (req.method === "HEAD") {
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        "Content-Type": "text/event-stream; charset=utf-8",
      });
      res.end();
      return;
    }
    if (!this.hub.add(res, SECURITY_HEADERS)) {
      this.text(res, "events", 503, "too many live clients\n", { "Retry-After": "5" });
      return;
    }
    this.requests.inc({ route: "events", code: "200" });
    // A new client gets the present at once, not after the next tick.
    const snapshot = this.trySnapshot();
    if (snapshot) {
      const update: LiveUpdate = { snapshot, samples: [] };
      this.hub.send(res, LIVE_EVENT, JSON.stringify(update));
    }
  }

  private async probe(res: ServerResponse, kind: "healthz" | "readyz"): Promise<void> {
    let result: ProbeResult;
    const given = kind === "healthz" ? this.options.healthz : this.options.readyz;
    if (given) {
      result = await given();
    } else if (kind === "healthz") {
      result = { ok: true, detail: "alive" };
    } else {
      const snapshot = this.trySnapshot();
      result = snapshot
        ? readyFromSnapshot(snapshot)
        : { ok: false, detail: `no status: ${this.lastSnapshotError}` };
    }
    this.text(res, kind, result.ok ? 200 : 503, `${result.detail}\n`);
  }

  private async action(
    req: IncomingMessage,
    res: ServerResponse,
    route: Extract<Route, { kind: "action" }>,
  ): Promise<void> {
    const { service, fwmark, action } = route;
    const snapshot = this.trySnapshot();
    const known = snapshot?.services
      .find((s) => s.name === service)
      ?.targets.some((t) => t.fwmark === fwmark);
    if (!known) {
      const body: ActionResponse = {
        ok: false,
        error: `no target ${fwmark} in service ${service}`,
      };
      return this.json(req, res, "action", 404, body);
    }
    try {
      await this.options.actions[action](service, fwmark);
    } catch (err) {
      const message = (err as Error).message;
      this.log.warning(`${action} ${service} ${fwmark} from the dashboard failed: ${message}`);
      const body: ActionResponse = { ok: false, error: message };
      return this.json(req, res, "action", 500, body);
    }
    this.log.notice(`${action} ${service} ${fwmark} from the dashboard`);
    const body: ActionResponse = { ok: true, action, service, fwmark };
    this.json(req, res, "action", 200, body);
    this.publish();
  }

  private json(
    req: IncomingMessage,
    res: ServerResponse,
    route: string,
    status: number,
    value: unknown,
  ): void {
    let body = Buffer.from(JSON.stringify(value));
    const headers: Record<string, string> = {
      ...SECURITY_HEADERS,
      "Content-Type": "application/json; charset=utf-8",
      "Cache-Control": "no-store",
      Vary: "Accept-Encoding",
    };
    if (body.length >= GZIP_MIN_BYTES && acceptsGzip(req)) {
      body = gzipSync(body);
      headers["Content-Encoding"] = "gzip";
    }
    headers["Content-Length"] = String(body.length);
    this.requests.inc({ route, code: String(status) });
    res.writeHead(status, headers);
    res.end(body);
  }

  private text(
    res: ServerResponse,
    route: string,
    status: number,
    body: string,
    extra: Record<string, string> = {},
  ): void {
    this.requests.inc({ route, code: String(status) });
    res.writeHead(status, {
      ...SECURITY_HEADERS,
      "Content-Type": "text/plain; charset=utf-8",
      "Cache-Control": "no-store",
      ...extra,
    });
    res.end(body);
  }

  private fail(res: ServerResponse, err: unknown): void {
    this.log.warning(`HTTP request failed: ${(err as Error).message}`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.text(res, "other", 500, "internal error\n");
  }
}

/** Creates and starts an endpoint: what `nflb run` calls. */
export async function startHttpEndpoint(options: HttpEndpointOptions): Promise<HttpEndpoint> {
  const endpoint = new HttpEndpoint(options);
  await endpoint.start();
  return endpoint;
}
