// The page's DOM-free parts, in Node: number formats, the chart data (history loaded,
// live samples appended, trimmed to the window), and the files the endpoint serves.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadDashboardAssets } from "../../src/dashboard/assets.js";
import { byteRate, duration, packetRate, percent, si } from "../../src/dashboard/page/format.js";
import { ServiceTraffic } from "../../src/dashboard/page/traffic.js";

describe("formats", () => {
  test("rates with three significant digits and an SI prefix", () => {
    assert.equal(si(0), "0");
    assert.equal(si(0.5), "0.5");
    assert.equal(si(999), "999");
    assert.equal(si(1234), "1.23 k");
    assert.equal(si(12_000), "12 k");
    assert.equal(si(42_600_000), "42.6 M");
    assert.equal(packetRate(35_600), "35.6 kpps");
    assert.equal(packetRate(7), "7 pps");
    assert.equal(byteRate(29_200_000), "29.2 MB/s");
    assert.equal(byteRate(512), "512 B/s");
    assert.equal(si(Number.NaN), "–");
  });

  test("shares and durations", () => {
    assert.equal(percent(1 / 3), "33.3%");
    assert.equal(percent(0), "0.0%");
    assert.equal(percent(0.0004), "0.04%");
    assert.equal(duration(59_999), "59 s");
    assert.equal(duration(3 * 3600_000 + 17 * 60_000), "3 h 17 min");
    assert.equal(duration(2 * 86400_000 + 3600_000), "2 d 1 h");
    assert.equal(duration(-5), "0 s");
  });
});

describe("chart data", () => {
  const T = 1_800_000_000_000;
  const sample = (fwmark: number, t: number, pps: number) => ({
    service: "web",
    fwmark,
    t,
    pps,
    bps: pps * 100,
  });

  test("a history is aligned on one time axis, with gaps where a target had no sample", () => {
    const traffic = new ServiceTraffic();
    traffic.load([
      {
        service: "web",
        fwmark: 1,
        samples: [1, 2, 3].map((i) => ({ t: T + i * 1000, pps: i, bps: i })),
      },
      { service: "web", fwmark: 2, samples: [{ t: T + 3000, pps: 30, bps: 30 }] },
    ]);
    assert.deepEqual(traffic.times, [T / 1000 + 1, T / 1000 + 2, T / 1000 + 3]);
    assert.deepEqual(traffic.values("pps", 1), [1, 2, 3]);
    assert.deepEqual(traffic.values("pps", 2), [null, null, 30]);
  });

  test("live samples append one time per tick; a new target starts with gaps; old times go", () => {
    const traffic = new ServiceTraffic();
    traffic.append([sample(1, T, 10)]);
    traffic.append([sample(1, T + 1000, 11), sample(2, T + 1000, 20)]);
    traffic.append([sample(1, T + 1000, 99)]);
    assert.deepEqual(traffic.values("pps", 1), [10, 11], "a repeated time is ignored");
    assert.deepEqual(traffic.values("bps", 2), [null, 2000]);
    traffic.trim(T / 1000 + 0.5);
    assert.deepEqual(traffic.times, [T / 1000 + 1]);
    assert.deepEqual(traffic.values("pps", 2), [20]);
  });
});

describe("assets", () => {
  const assets = loadDashboardAssets();

  test("the page, its scripts, styles and uPlot are all there", () => {
    for (const path of [
      "/",
      "/assets/app.js",
      "/assets/view.js",
      "/assets/charts.js",
      "/assets/traffic.js",
      "/assets/format.js",
      "/assets/protocol.js",
      "/assets/style.css",
      "/assets/uPlot.iife.min.js",
      "/assets/uPlot.min.css",
      "/assets/favicon.svg",
    ]) {
      assert.ok(assets.get(path)?.body.length, path);
    }
  });

  test("works offline: every URL the page and its scripts name is served by nflb", () => {
    const page = assets.get("/")?.body.toString("utf8") ?? "";
    for (const [, url] of page.matchAll(/(?:src|href)="([^"]+)"/g)) {
      assert.ok(assets.has(url), `${url} is served`);
    }
    for (const asset of assets.values()) {
      if (!asset.path.endsWith(".js") || asset.path.includes("uPlot")) continue;
      const text = asset.body.toString("utf8");
      assert.doesNotMatch(text, /https?:\/\//, `${asset.path} names no other site`);
      for (const [, spec] of text.matchAll(/\bfrom "([^"]+)"/g)) {
        assert.ok(
          assets.has(`/assets/${spec.replace(/^\.\//, "")}`),
          `${asset.path} imports ${spec}`,
        );
      }
    }
  });

  test("small: the whole page is under 300 kB, under 100 kB gzipped", () => {
    let raw = 0;
    let gzip = 0;
    for (const a of assets.values()) {
      raw += a.body.length;
      gzip += a.gzip.length;
    }
    assert.ok(raw < 300_000, `raw ${raw} bytes`);
    assert.ok(gzip < 100_000, `gzip ${gzip} bytes`);
  });
});
