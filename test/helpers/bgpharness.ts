// A stand-in for `nflb run` in BGP tests: one process per instance namespace that holds
// a BgpAnnouncer, started with a JSON spec on argv, driven by JSON lines on stdin, one
// JSON reply line per command on stdout. Killing it (-9 included) is the point of some
// tests: the announcement must die with it.
//
//   argv[2]  {"spec": BgpSpec, "device"?: string, "birdc"?: string}
//   stdin    {"cmd": "update", "services": ServiceFacts[]} | {"cmd": "status"}
//            | {"cmd": "stop"} | {"cmd": "exit"}
//   stdout   {"event": "started", ...} first, then {"ok": true, ...} | {"ok": false, "error": {...}}
import { createInterface } from "node:readline";
import { BgpAnnouncer, BgpError } from "../../src/bgp/index.js";

const reply = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const errorOf = (err: unknown) =>
  err instanceof BgpError
    ? { kind: err.kind, message: err.message }
    : { kind: "exception", message: (err as Error).message };

const input = JSON.parse(process.argv[2] ?? "{}");
let announcer: BgpAnnouncer;
try {
  announcer = new BgpAnnouncer(input.spec, { device: input.device, birdc: input.birdc });
  const result = await announcer.start(Date.now());
  reply({ event: "started", ok: true, result });
} catch (err) {
  reply({ event: "started", ok: false, error: errorOf(err) });
  process.exit(1);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line) as { cmd: string; services?: unknown };
  try {
    if (msg.cmd === "update") {
      const result = await announcer.update(msg.services as never, Date.now());
      reply({ ok: true, result, snapshot: announcer.snapshot(Date.now()) });
    } else if (msg.cmd === "status") {
      reply({ ok: true, status: await announcer.status(Date.now()) });
    } else if (msg.cmd === "stop") {
      const result = await announcer.stop(Date.now());
      reply({ ok: true, result });
    } else if (msg.cmd === "render") {
      reply({ ok: true, text: announcer.render() });
    } else if (msg.cmd === "exit") {
      reply({ ok: true });
      break;
    } else {
      reply({ ok: false, error: { kind: "exception", message: `unknown command ${msg.cmd}` } });
    }
  } catch (err) {
    reply({ ok: false, error: errorOf(err) });
  }
}
process.exit(0);
