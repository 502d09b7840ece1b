// Draws docs/dashboard.png: the dashboard of a fake service with realistic data (three
// services, a target down, one draining, 15 minutes of traffic), in Debian's headless
// Chromium. Run after a build: node dist/scripts/dashboard-screenshot.js [FILE] [WIDTH]
import { fileURLToPath } from "node:url";
import { HttpEndpoint } from "../src/http/endpoint.js";
import { TargetHistoryRing } from "../src/http/history.js";
import {
  FakeActions,
  launchChromium,
  seedHistory,
  waitForUpdates,
} from "../test/helpers/dashboard.js";

const out = process.argv[2] ?? fileURLToPath(new URL("../../docs/dashboard.png", import.meta.url));
const width = Number(process.argv[3] ?? 1280);

const history = new TargetHistoryRing();
const status = seedHistory(history, Date.now(), 15);
const endpoint = new HttpEndpoint({
  listen: { host: "127.0.0.1", port: 0 },
  source: status,
  actions: new FakeActions(status),
  history,
  record: false,
  log: { warning: () => {}, notice: () => {} },
});
await endpoint.start();
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width, height: 900 }, deviceScaleFactor: 1 });
  page.on("console", (m) => {
    if (m.type() === "error") process.stderr.write(`page: ${m.text()}\n`);
  });
  await page.goto(endpoint.url);
  await waitForUpdates(page, 3);
  await page.waitForTimeout(300);
  await page.screenshot({ path: out, fullPage: true });
  process.stdout.write(`wrote ${out}\n`);
} finally {
  await browser.close();
  await endpoint.close();
}
