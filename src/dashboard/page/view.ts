// The page's DOM: built from snapshots, updated in place once a second. Service cards and
// target rows are keyed (a row, its buttons and its charts survive updates, so a click
// is never lost to a redraw); the plain tables are rebuilt. Every text goes in through
// textContent: names and messages from the configuration are never parsed as HTML.
import type {
  QueueStatus,
  ServiceEvent,
  ServiceStatus,
  StatusSnapshot,
  TargetHistory,
  TargetStatus,
} from "../../service/status.js";
import { type ChartSeries, seriesColor, TrafficChart } from "./charts.js";
import { ago, byteRate, clock, count, duration, packetRate, percent } from "./format.js";
import type { LiveSample, TargetAction } from "./protocol.js";
import { type Metric, ServiceTraffic } from "./traffic.js";

type Attrs = Record<string, string>;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function field(root: HTMLElement, name: string): HTMLElement {
  const node = root.querySelector<HTMLElement>(`[data-field="${name}"]`);
  if (!node) throw new Error(`page element ${name} missing`);
  return node;
}

function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

/** A badge whose class names its state, for color: "up", "down", "drain", ... */
function setBadge(node: HTMLElement, state: string, text = state): void {
  setText(node, text);
  node.className = `badge ${state}`;
}

/** Reuses children by key, creates new ones, removes stale ones, keeps the order. */
function syncKeyed<T>(
  parent: HTMLElement,
  items: T[],
  key: (item: T) => string,
  create: (item: T) => HTMLElement,
  update: (node: HTMLElement, item: T) => void,
  removed: (node: HTMLElement) => void = () => {},
): void {
  const existing = new Map<string, HTMLElement>();
  for (const child of Array.from(parent.children)) {
    if (child instanceof HTMLElement && child.dataset.key !== undefined) {
      existing.set(child.dataset.key, child);
    }
  }
  items.forEach((item, i) => {
    const k = key(item);
    let node = existing.get(k);
    if (node) existing.delete(k);
    else {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    const at = parent.children[i];
    if (at !== node) parent.insertBefore(node, at ?? null);
  });
  for (const node of existing.values()) {
    removed(node);
    node.remove();
  }
}

function table(headers: string[], rows: string[][], emptyText: string): HTMLElement {
  if (rows.length === 0) return el("p", { class: "empty" }, emptyText);
  return el(
    "div",
    { class: "scroll" },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))),
    ),
  );
}

function dropsText(drops: Record<string, number>): string {
  const parts = Object.entries(drops)
    .filter(([, n]) => n > 0)
    .map(([reason, n]) => `${reason} ${count(n)}`);
  return parts.length > 0 ? parts.join(", ") : "0";
}

export type ActionRequest = (service: string, target: TargetStatus, action: TargetAction) => void;

interface ServiceCard {
  traffic: ServiceTraffic;
  pps: TrafficChart;
  bps: TrafficChart;
  targets: TargetStatus[];
}

export class DashboardView {
  private readonly cards = new Map<string, ServiceCard>();
  private lastEvents = "";
  /** Histories of services whose card does not exist yet. */
  private pending = new Map<string, TargetHistory[]>();
  private windowSeconds = 15 * 60;

  constructor(
    private readonly root: HTMLElement,
    private readonly onAction: ActionRequest,
  ) {}

  private section(name: string): HTMLElement {
    return field(this.root, name);
  }

  /** Loads the charts' past (on start and after a reconnect). */
  loadHistory(windowMs: number, targets: TargetHistory[]): void {
    this.windowSeconds = windowMs / 1000;
    const byService = new Map<string, TargetHistory[]>();
    for (const h of targets) byService.set(h.service, [...(byService.get(h.service) ?? []), h]);
    for (const [name, card] of this.cards) {
      card.traffic.load(byService.get(name) ?? []);
      this.drawCharts(card);
    }
    this.pending = byService;
  }

  update(snapshot: StatusSnapshot, samples: LiveSample[]): void {
    const now = Date.parse(snapshot.at);
    this.renderHeader(snapshot, now);
    const services = this.section("services");
    syncKeyed(
      services,
      snapshot.services,
      (s) => s.name,
      (s) => this.createCard(s),
      (node, s) => this.updateCard(node, s, samples, now),
      (node) => this.dropCard(node.dataset.key ?? ""),
    );
    if (snapshot.services.length === 0)
      setText(this.section("no-services"), "No service is configured.");
    else setText(this.section("no-services"), "");
    this.renderQueues(snapshot.services);
    this.renderFlows(snapshot);
    this.renderBgp(snapshot);
    this.renderEvents(snapshot.events);
  }

  private renderHeader(s: StatusSnapshot, now: number): void {
    setText(this.section("version"), `nflb ${s.version}`);
    const parts = [
      `pid ${s.pid}`,
      `up ${duration(now - Date.parse(s.startedAt))}`,
      s.config.file ? `config ${s.config.file}` : "",
      s.config.appliedAt ? `applied ${ago(s.config.appliedAt, now)}` : "",
      `reloads ${s.config.reloads}${s.config.reloadFailures ? ` (${s.config.reloadFailures} failed)` : ""}`,
    ];
    setText(this.section("meta"), parts.filter(Boolean).join(" · "));
    const error = this.section("config-error");
    setText(error, s.config.lastError ? `Last reload failed: ${s.config.lastError}` : "");
    error.hidden = !s.config.lastError;
  }

  private createCard(s: ServiceStatus): HTMLElement {
    const pps = el("div", { class: "chart" });
    const bps = el("div", { class: "chart" });
    const node = el(
      "article",
      { class: "card" },
      el(
        "header",
        {},
        el("h2", {}, s.name),
        el("span", { "data-field": "mode", class: "tag" }),
        el("span", { "data-field": "dataplane", class: "tag" }),
        el("span", { "data-field": "ready", class: "badge" }),
      ),
      el("ul", { class: "vips", "data-field": "vips" }),
      el("p", { class: "meta", "data-field": "table" }),
      el("div", { class: "targets", "data-field": "targets" }),
      el("div", { class: "charts" }, pps, bps),
    );
    this.cards.set(s.name, {
      traffic: new ServiceTraffic(),
      pps: new TrafficChart(pps, "Packets per second", (v) => packetRate(v)),
      bps: new TrafficChart(bps, "Bytes per second", (v) => byteRate(v)),
      targets: [],
    });
    const past = this.pending.get(s.name);
    if (past) {
      this.cards.get(s.name)?.traffic.load(past);
      this.pending.delete(s.name);
    }
    return node;
  }

  private dropCard(name: string): void {
    const card = this.cards.get(name);
    card?.pps.destroy();
    card?.bps.destroy();
    this.cards.delete(name);
  }

  private updateCard(
    node: HTMLElement,
    s: ServiceStatus,
    samples: LiveSample[],
    now: number,
  ): void {
    setText(field(node, "mode"), s.mode.toUpperCase());
    setText(
      field(node, "dataplane"),
      s.dataplane === "kernel" ? "kernel data plane" : "queue data plane",
    );
    const up = s.targets.filter((t) => t.health === "up").length;
    setBadge(
      field(node, "ready"),
      s.ready ? "up" : "down",
      !s.warm ? "warming up" : s.ready ? "ready" : "not ready",
    );
    syncKeyed(
      field(node, "vips"),
      s.vips,
      (v) => v.prefix,
      (v) => el("li", {}, el("code", {}, v.prefix), " ", el("span", { "data-field": "announce" })),
      (li, v) => {
        const badge = field(li, "announce");
        badge.hidden = v.announced === undefined;
        if (v.announced !== undefined) {
          const since = v.since ? ` ${ago(v.since, now)}` : "";
          setBadge(badge, v.announced ? "up" : "down", v.announced ? "announced" : "withdrawn");
          badge.title = `${v.reason ?? ""}${since}`.trim();
        }
      },
    );
    setText(
      field(node, "table"),
      `${up} of ${s.targets.length} targets up · table ${count(s.tableSize)} entries · generation ${s.generation}`,
    );
    const latest = new Map(samples.filter((x) => x.service === s.name).map((x) => [x.fwmark, x]));
    syncKeyed(
      field(node, "targets"),
      s.targets,
      (t) => String(t.fwmark),
      (t) => this.createTarget(s.name, t.fwmark),
      (row, t) => this.updateTarget(row, t, latest.get(t.fwmark), now),
    );
    const card = this.cards.get(s.name);
    if (card) {
      card.targets = s.targets;
      card.traffic.append(samples.filter((x) => x.service === s.name));
      card.traffic.trim(now / 1000 - this.windowSeconds);
      this.drawCharts(card);
    }
  }

  private drawCharts(card: ServiceCard): void {
    const series = (metric: Metric): ChartSeries[] =>
      card.targets.map((t, i) => ({
        label: `${t.fwmark} ${t.address}`,
        values: card.traffic.values(metric, t.fwmark),
        color: seriesColor(i),
      }));
    card.pps.update(card.traffic.times, series("pps"));
    card.bps.update(card.traffic.times, series("bps"));
  }

  private createTarget(service: string, fwmark: number): HTMLElement {
    const button = (action: TargetAction, label: string) => {
      const b = el("button", { type: "button", "data-action": action }, label);
      b.addEventListener("click", () => {
        const target = this.cards.get(service)?.targets.find((t) => t.fwmark === fwmark);
        if (target) this.onAction(service, target, action);
      });
      return b;
    };
    return el(
      "div",
      { class: "target", "data-fwmark": String(fwmark) },
      el(
        "div",
        { class: "who" },
        el("span", { class: "swatch", "data-field": "swatch" }),
        el("strong", {}, `#${fwmark}`),
        " ",
        el("code", { "data-field": "address" }),
      ),
      el(
        "div",
        { class: "state" },
        el("span", { "data-field": "health", class: "badge" }),
        el("span", { "data-field": "admin", class: "badge" }),
        el("small", { "data-field": "since" }),
      ),
      el("div", { class: "check", "data-field": "check" }),
      el(
        "div",
        { class: "share" },
        el("span", { class: "bar" }, el("span", { "data-field": "bar" })),
        el("span", { "data-field": "share" }),
      ),
      el("div", { class: "rate", "data-field": "rate" }),
      el(
        "div",
        { class: "actions" },
        button("drain", "Drain"),
        button("disable", "Disable"),
        button("enable", "Enable"),
      ),
    );
  }

  private updateTarget(
    row: HTMLElement,
    t: TargetStatus,
    sample: LiveSample | undefined,
    now: number,
  ): void {
    const index = Array.from(row.parentElement?.children ?? []).indexOf(row);
    field(row, "swatch").style.background = seriesColor(Math.max(0, index));
    setText(field(row, "address"), t.address);
    setBadge(field(row, "health"), t.health);
    setBadge(field(row, "admin"), t.admin);
    setText(field(row, "since"), `${t.health} for ${duration(now - Date.parse(t.healthSince))}`);
    const check = t.lastCheck;
    setText(
      field(row, "check"),
      check
        ? `check: ${check.reason}${check.ok ? ` in ${check.latencyMs.toFixed(1)} ms` : ""}`
        : "check: –",
    );
    field(row, "bar").style.width = `${Math.min(100, t.share * 100)}%`;
    setText(
      field(row, "share"),
      `weight ${t.weight} · ${percent(t.share)} of the table${t.inTable ? "" : " (out)"}`,
    );
    setText(
      field(row, "rate"),
      sample
        ? `${packetRate(sample.pps)} · ${byteRate(sample.bps)}`
        : (field(row, "rate").textContent ?? ""),
    );
    row.dataset.health = t.health;
    row.dataset.admin = t.admin;
    for (const b of row.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
      const action = b.dataset.action;
      b.hidden =
        (action === "drain" && t.admin === "drain") ||
        (action === "disable" && t.admin === "disabled") ||
        (action === "enable" && t.admin === "enabled");
    }
  }

  private renderQueues(services: ServiceStatus[]): void {
    const rows = services.flatMap((s) =>
      s.queues.map((q: QueueStatus) => [
        s.name,
        String(q.queue),
        q.running ? "running" : "stopped",
        count(q.packets),
        dropsText(q.drops),
        q.kernel ? count(q.kernel.queueDropped) : "–",
        q.kernel ? count(q.kernel.userDropped) : "–",
        q.kernel ? count(q.kernel.waiting) : "–",
      ]),
    );
    this.section("queues").replaceChildren(
      table(
        [
          "service",
          "queue",
          "worker",
          "packets",
          "drops",
          "kernel: queue full",
          "socket full",
          "waiting",
        ],
        rows,
        "No queue (kernel data plane or statistic mode).",
      ),
    );
  }

  private renderFlows(snapshot: StatusSnapshot): void {
    const rows = snapshot.flows.map((f) => [f.name, f.service, String(f.priority), f.match]);
    this.section("flows").replaceChildren(
      table(
        ["flow", "service", "priority", "matches"],
        rows,
        "No flows: each service serves its own VIPs.",
      ),
    );
  }

  private renderBgp(snapshot: StatusSnapshot): void {
    const box = this.section("bgp-box");
    box.hidden = !snapshot.bgp;
    if (!snapshot.bgp) return;
    const now = Date.parse(snapshot.at);
    const rows = snapshot.bgp.sessions.map((s) => [
      s.neighbor,
      s.state,
      s.since ? ago(s.since, now) : "–",
      s.lastError ?? "",
    ]);
    this.section("bgp").replaceChildren(
      table(["neighbor", "state", "since", "last error"], rows, "No BGP session."),
    );
  }

  private renderEvents(events: ServiceEvent[]): void {
    const last = events[events.length - 1];
    const signature = `${events.length}|${last?.at}|${last?.message}`;
    if (signature === this.lastEvents) return;
    this.lastEvents = signature;
    const list = this.section("events");
    const recent = events.slice(-100).reverse();
    if (recent.length === 0) {
      list.replaceChildren(el("li", { class: "empty" }, "Nothing happened yet."));
      return;
    }
    list.replaceChildren(
      ...recent.map((e) =>
        el(
          "li",
          { "data-kind": e.kind },
          el("time", { datetime: e.at }, clock(e.at)),
          el("span", { class: "ev-kind" }, e.kind),
          e.service ? el("span", { class: "ev-service" }, e.service) : "",
          el("span", { class: "ev-message" }, e.message),
        ),
      ),
    );
  }
}
