// The dashboard in a real browser (Debian's headless Chromium, driven by playwright-core)
// against a live endpoint on loopback fed by a fake service: the page loads cleanly,
// lists the targets, follows health changes within 2 s, drains a target after a
// confirmation, receives an update every second, and fits a 375-pixel-wide phone.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { HttpEndpoint } from "../../src/http/endpoint.js";
import { TargetHistoryRing } from "../../src/http/history.js";
import {
  FakeActions,
  type FakeStatus,
  launchChromium,
  seedHistory,
  waitForUpdates,
} from "../helpers/dashboard.js";

/** Opens the dashboard in a fresh context and records everything that went wrong on the page. */
async function openPage(
  browser: Browser,
  url: string,
  viewport = { width: 1280, height: 900 },
): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
  const context = await browser.newContext({
    viewport,
    isMobile: viewport.width < 500,
    hasTouch: viewport.width < 500,
  });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning")
      problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("requestfailed", (r) => {
    // The live stream is cut when the page closes; that is no failure of the page.
    if (!r.url().endsWith("/api/events")) problems.push(`request failed: ${r.url()}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.goto(url);
  await waitForUpdates(page, 1);
  return { page, context, problems };
}

const row = (service: string, fwmark: number) =>
  `[data-key="${service}"] .target[data-fwmark="${fwmark}"]`;

describe("dashboard in Chromium", () => {
  let browser: Browser;
  let endpoint: HttpEndpoint;
  let status: FakeStatus;
  let actions: FakeActions;

  before(async () => {
    const history = new TargetHistoryRing();
    status = seedHistory(history, Date.now(), 15);
    actions = new FakeActions(status);
    endpoint = new HttpEndpoint({
      listen: { host: "127.0.0.1", port: 0 },
      source: status,
      actions,
      history,
      record: false,
      log: { warning: () => {}, notice: () => {} },
    });
    await endpoint.start();
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await endpoint?.close();
  });

  test("loads without console errors and lists every service and target", async () => {
    const { page, context, problems } = await openPage(browser, endpoint.url);
    try {
      assert.deepEqual(await page.locator("article.card h2").allTextContents(), [
        "web",
        "api",
        "dns",
      ]);
      assert.equal(await page.locator(".target").count(), 9);
      assert.equal(
        await page.locator(`${row("web", 2)} [data-field="address"]`).textContent(),
        "10.100.0.22",
      );
      assert.equal(
        await page.locator(`${row("dns", 22)} [data-field="health"]`).textContent(),
        "down",
      );
      assert.equal(
        await page.locator(`${row("api", 13)} [data-field="admin"]`).textContent(),
        "drain",
      );
      // The charts were drawn from the 15 minutes of history: 2 per service.
      await page.locator(".chart canvas").nth(5).waitFor();
      assert.equal(await page.locator(".chart .u-title").count(), 6);
      assert.match(
        (await page.locator("[data-field=queues]").textContent()) ?? "",
        /userDropped|socket full/,
      );
      assert.equal(await page.locator("[data-field=flows] tbody tr").count(), 3);
      assert.equal(await page.locator("[data-field=events] li").count(), 8);
      await page.waitForTimeout(500);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test("a target going down is shown within 2 s of its health changing", async () => {
    const { page, context, problems } = await openPage(browser, endpoint.url);
    try {
      const health = page.locator(`${row("web", 3)} [data-field="health"]`);
      assert.equal(await health.textContent(), "up");
      const t0 = Date.now();
      status.setHealth("web", 3, "down", "connection refused");
      await page
        .locator(`${row("web", 3)} [data-field="health"]`, { hasText: "down" })
        .waitFor({ timeout: 2000 });
      const shownAfter = Date.now() - t0;
      assert.ok(shownAfter < 2000, `shown after ${shownAfter} ms`);
      assert.match(
        (await page.locator("[data-field=events] li").first().textContent()) ?? "",
        /up -> down: connection refused/,
      );
      status.setHealth("web", 3, "up", "ok");
      await page
        .locator(`${row("web", 3)} [data-field="health"]`, { hasText: "up" })
        .waitFor({ timeout: 2000 });
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test("drain from the page: cancel does nothing; confirm calls the action and the page shows it", async () => {
    const { page, context, problems } = await openPage(browser, endpoint.url);
    try {
      const calls = actions.calls.length;
      const drain = page.locator(`${row("web", 2)} button[data-action="drain"]`);
      await drain.click();
      const dialog = page.locator("dialog#confirm");
      await dialog.waitFor({ state: "visible" });
      assert.equal(
        await page.locator("#confirm-question").textContent(),
        "Drain target 2 (10.100.0.22) of web?",
      );
      await page.locator("#confirm-cancel").click();
      await dialog.waitFor({ state: "hidden" });
      await page.waitForTimeout(300);
      assert.equal(actions.calls.length, calls, "cancel sends nothing");

      await drain.click();
      await dialog.waitFor({ state: "visible" });
      assert.equal(await page.locator("#confirm-ok").textContent(), "Drain");
      await page.locator("#confirm-ok").click();
      await page
        .locator(`${row("web", 2)} [data-field="admin"]`, { hasText: "drain" })
        .waitFor({ timeout: 2000 });
      assert.deepEqual(actions.calls.slice(calls), [
        { action: "drain", service: "web", fwmark: 2 },
      ]);
      assert.equal(status.target("web", 2).admin, "drain");
      assert.equal(await page.locator("#notice").textContent(), "Drain: target 2 of web.");
      assert.equal(await drain.isVisible(), false, "no Drain button on a draining target");

      // And back: Enable, confirmed.
      await page.locator(`${row("web", 2)} button[data-action="enable"]`).click();
      await page.locator("#confirm-ok").click();
      await page
        .locator(`${row("web", 2)} [data-field="admin"]`, { hasText: "enabled" })
        .waitFor({ timeout: 2000 });
      assert.deepEqual(actions.calls.at(-1), { action: "enable", service: "web", fwmark: 2 });
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test("a refused action is reported on the page, not swallowed", async () => {
    const { page, context } = await openPage(browser, endpoint.url);
    try {
      actions.fail = "state file is locked by another writer";
      await page.locator(`${row("dns", 21)} button[data-action="disable"]`).click();
      await page.locator("#confirm-ok").click();
      await page.locator("#notice.error").waitFor({ timeout: 2000 });
      assert.equal(
        await page.locator("#notice").textContent(),
        "Disable failed: state file is locked by another writer",
      );
      assert.equal(status.target("dns", 21).admin, "enabled");
    } finally {
      actions.fail = undefined;
      await context.close();
    }
  });

  test("live updates arrive at least once a second", async () => {
    const { page, context, problems } = await openPage(browser, endpoint.url);
    try {
      const first = await waitForUpdates(page, 1);
      const t0 = Date.now();
      // One a second: 5 ticks in 5.5 s; 4 leaves room for a busy machine.
      await page.waitForTimeout(5500);
      const last = Number(await page.getAttribute("body", "data-updates"));
      const seconds = (Date.now() - t0) / 1000;
      assert.ok(last - first >= 4, `${last - first} updates in ${seconds.toFixed(1)} s`);
      assert.equal(await page.locator("#conn").textContent(), "live");
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test("the page reconnects by itself when the endpoint restarts (nflb run restarted)", async () => {
    const { page, context, problems } = await openPage(browser, endpoint.url);
    try {
      const port = endpoint.address.port;
      await endpoint.close();
      await page.locator("#conn", { hasText: "reconnecting" }).waitFor({ timeout: 5000 });
      endpoint = new HttpEndpoint({
        listen: { host: "127.0.0.1", port },
        source: status,
        actions,
        record: false,
        log: { warning: () => {}, notice: () => {} },
      });
      await endpoint.start();
      const before = Number(await page.getAttribute("body", "data-updates"));
      await waitForUpdates(page, before + 2, 10_000);
      assert.equal(await page.locator("#conn").textContent(), "live");
      // Only the lost stream and the refused reconnects went wrong while it was down.
      const unexpected = problems.filter((p) => !/api\/events|ERR_CONNECTION_REFUSED/.test(p));
      assert.deepEqual(unexpected, []);
    } finally {
      await context.close();
    }
  });

  test("works at 375 pixels wide: nothing overflows, every target and its buttons fit", async () => {
    const { page, context, problems } = await openPage(browser, endpoint.url, {
      width: 375,
      height: 740,
    });
    try {
      const [scrollWidth, clientWidth] = (await page.evaluate(
        "[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]",
      )) as [number, number];
      assert.equal(clientWidth, 375);
      assert.ok(scrollWidth <= 375, `page is ${scrollWidth} px wide`);
      const rows = page.locator(".target");
      assert.equal(await rows.count(), 9);
      for (let i = 0; i < 9; i++) {
        const box = await rows.nth(i).boundingBox();
        assert.ok(
          box && box.x >= 0 && box.x + box.width <= 375,
          `row ${i}: ${JSON.stringify(box)}`,
        );
        const button = await rows.nth(i).locator("button:visible").first().boundingBox();
        assert.ok(
          button && button.x + button.width <= 375 && button.height >= 30,
          `row ${i} button`,
        );
      }
      await page.locator(`${row("dns", 23)} button[data-action="drain"]`).tap();
      const dialog = await page.locator("dialog#confirm").boundingBox();
      assert.ok(dialog && dialog.x >= 0 && dialog.x + dialog.width <= 375, "the confirmation fits");
      await page.locator("#confirm-cancel").tap();
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});
