// The dashboard page: loads the traffic history, follows the live stream (server-sent
// events, one snapshot a second) and sends target actions after a confirmation. The
// session is the HttpOnly cookie the endpoint set (or loopback), so no token is handled
// here.
import type { TargetStatus } from "../../service/status.js";
import {
  ACTION_HEADER,
  type ActionResponse,
  type HistoryResponse,
  LIVE_EVENT,
  type LiveUpdate,
  ROUTES,
  type TargetAction,
  targetActionPath,
} from "./protocol.js";
import { DashboardView } from "./view.js";

const STALE_MS = 5000;

function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`page element #${id} missing`);
  return node as T;
}

const CONSEQUENCES: Record<TargetAction, string> = {
  drain: "It gets no new flows; established connections finish where connections are pinned.",
  disable: "It leaves the table now: its flows move to the other targets.",
  enable: "It returns to the table as soon as its health check says up.",
};

function confirmAction(question: string, consequence: string, label: string): Promise<boolean> {
  const dialog = byId<HTMLDialogElement>("confirm");
  byId("confirm-question").textContent = question;
  byId("confirm-consequence").textContent = consequence;
  const ok = byId<HTMLButtonElement>("confirm-ok");
  ok.textContent = label;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function notify(text: string, kind: "ok" | "error"): void {
  const box = byId("notice");
  box.textContent = text;
  box.className = `notice ${kind}`;
  box.hidden = false;
}

async function requestAction(
  service: string,
  target: TargetStatus,
  action: TargetAction,
): Promise<void> {
  const label = action[0].toUpperCase() + action.slice(1);
  const question = `${label} target ${target.fwmark} (${target.address}) of ${service}?`;
  if (!(await confirmAction(question, CONSEQUENCES[action], label))) return;
  try {
    const res = await fetch(targetActionPath(service, target.fwmark, action), {
      method: "POST",
      headers: { [ACTION_HEADER]: "1" },
      credentials: "same-origin",
    });
    const body = (await res
      .json()
      .catch(() => ({ ok: false, error: res.statusText }))) as ActionResponse;
    if (body.ok) notify(`${label}: target ${target.fwmark} of ${service}.`, "ok");
    else notify(`${label} failed: ${body.error}`, "error");
  } catch (err) {
    notify(`${label} failed: ${(err as Error).message}`, "error");
  }
}

function setConnection(state: "live" | "stale" | "offline", text: string): void {
  const badge = byId("conn");
  badge.textContent = text;
  badge.className = `badge conn ${state}`;
}

async function loadHistory(view: DashboardView): Promise<void> {
  const res = await fetch(ROUTES.history, { credentials: "same-origin" });
  if (!res.ok) throw new Error(`history: ${res.status} ${res.statusText}`);
  const history = (await res.json()) as HistoryResponse;
  view.loadHistory(history.windowMs, history.targets);
}

function start(): void {
  const view = new DashboardView(byId("dashboard"), (service, target, action) => {
    void requestAction(service, target, action);
  });
  byId("confirm-cancel").addEventListener("click", () =>
    byId<HTMLDialogElement>("confirm").close("cancel"),
  );
  byId("confirm-ok").addEventListener("click", () =>
    byId<HTMLDialogElement>("confirm").close("ok"),
  );
  byId("notice").addEventListener("click", (e) => {
    (e.currentTarget as HTMLElement).hidden = true;
  });

  let lastUpdate = 0;
  let updates = 0;
  let needHistory = false;
  const fetchHistory = () => loadHistory(view).catch((err: Error) => notify(err.message, "error"));
  const source = new EventSource(ROUTES.events);
  void fetchHistory();
  source.addEventListener("open", () => {
    // After a reconnect the charts missed samples: load the past again.
    if (needHistory) {
      needHistory = false;
      void fetchHistory();
    }
  });
  source.addEventListener("error", () => {
    needHistory = true;
    setConnection("offline", "reconnecting");
  });
  source.addEventListener(LIVE_EVENT, (event) => {
    const update = JSON.parse((event as MessageEvent<string>).data) as LiveUpdate;
    view.update(update.snapshot, update.samples);
    lastUpdate = Date.now();
    updates += 1;
    // Read by the browser tests: how many live updates the page has drawn.
    document.body.dataset.updates = String(updates);
    setConnection("live", "live");
  });
  setInterval(() => {
    if (
      lastUpdate > 0 &&
      Date.now() - lastUpdate > STALE_MS &&
      source.readyState === EventSource.OPEN
    ) {
      setConnection("stale", "no update");
    }
  }, 1000);
}

start();
