// A dashboard endpoint with a fake service, as its own process, so a test can run it in
// a network namespace (bound to an address that exists only there).
//   node dashboard-server.js LISTEN...
// Prints one JSON line {"endpoints":[{origin,url,tokenRequired}]} when listening, then
// one JSON line per action called from a client; stops on SIGTERM or when stdin closes.
// The token file comes from NFLB_HTTP_TOKEN_FILE, the record dir from NFLB_RUN_DIR.
import { HttpEndpoint } from "../../src/http/endpoint.js";
import { FakeActions, FakeStatus } from "./dashboard.js";

const status = new FakeStatus();
const fake = new FakeActions(status);
const reporting = {
  drain: (s: string, f: number) => report("drain", s, f),
  disable: (s: string, f: number) => report("disable", s, f),
  enable: (s: string, f: number) => report("enable", s, f),
};

function report(action: "drain" | "disable" | "enable", service: string, fwmark: number): void {
  fake[action](service, fwmark);
  process.stdout.write(`${JSON.stringify({ action, service, fwmark })}\n`);
}

const endpoints = process.argv.slice(2).map(
  (listen, i) =>
    new HttpEndpoint({
      listen,
      source: status,
      actions: reporting,
      // The first one leaves the record nflb dashboard-url reads.
      record: i === 0 ? undefined : false,
      log: { warning: (m) => process.stderr.write(`${m}\n`), notice: () => {} },
    }),
);
for (const e of endpoints) await e.start();
process.stdout.write(
  `${JSON.stringify({
    endpoints: endpoints.map((e) => ({
      origin: e.origin,
      url: e.url,
      tokenRequired: e.tokenRequired,
    })),
  })}\n`,
);

async function stop(): Promise<void> {
  for (const e of endpoints) await e.close();
  process.exit(0);
}
process.once("SIGTERM", () => void stop());
process.stdin.on("end", () => void stop());
process.stdin.resume();
