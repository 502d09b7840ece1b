// The dashboard's files, as the endpoint serves them: the page (src/dashboard/public/),
// its compiled scripts (dist/src/dashboard/page/, from src/dashboard/page/) and uPlot
// from its npm package. Found relative to this module, which sits at the same place in
// a checkout and in an installed package, and read once into memory (with a gzip copy):
// about 100 kB in all, so nothing touches the disk per request and nothing comes from
// another site.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { ROUTES } from "./page/protocol.js";

export interface Asset {
  /** URL path it is served at. */
  path: string;
  contentType: string;
  body: Buffer;
  gzip: Buffer;
  etag: string;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".svg": "image/svg+xml",
};

const PUBLIC_DIR = fileURLToPath(new URL("../../../src/dashboard/public/", import.meta.url));
const PAGE_DIR = fileURLToPath(new URL("./page/", import.meta.url));

/** Where each asset comes from: [URL path, file]. */
function assetFiles(): Array<[string, string]> {
  const require = createRequire(import.meta.url);
  const files: Array<[string, string]> = [
    [ROUTES.page, `${PUBLIC_DIR}index.html`],
    [`${ROUTES.assets}style.css`, `${PUBLIC_DIR}style.css`],
    [`${ROUTES.assets}favicon.svg`, `${PUBLIC_DIR}favicon.svg`],
    [`${ROUTES.assets}uPlot.min.css`, require.resolve("uplot/dist/uPlot.min.css")],
    [`${ROUTES.assets}uPlot.iife.min.js`, require.resolve("uplot/dist/uPlot.iife.min.js")],
  ];
  let scripts: string[];
  try {
    scripts = readdirSync(PAGE_DIR).filter((f) => f.endsWith(".js"));
  } catch {
    scripts = [];
  }
  if (!scripts.includes("app.js")) {
    throw new Error(`the dashboard's scripts are missing in ${PAGE_DIR}: run npm run build`);
  }
  for (const f of scripts.sort()) files.push([`${ROUTES.assets}${f}`, `${PAGE_DIR}${f}`]);
  return files;
}

function readAsset(path: string, file: string): Asset {
  let body: Buffer;
  try {
    body = readFileSync(file);
  } catch (err) {
    throw new Error(`dashboard asset ${basename(file)} missing: ${(err as Error).message}`);
  }
  return {
    path,
    contentType: CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
    body,
    gzip: gzipSync(body, { level: 9 }),
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
  };
}

/** Every asset by URL path; throws with a clear message when one is missing. */
export function loadDashboardAssets(): Map<string, Asset> {
  return new Map(assetFiles().map(([path, file]) => [path, readAsset(path, file)]));
}
