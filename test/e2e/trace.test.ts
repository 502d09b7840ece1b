// Logs and traces of a running daemon (NAT mode, real traffic): the control socket, the
// log level in the shared state, trace flows selecting exactly their packets with the
// target `nflb fwmark` predicts, several tracers at once, a tracer that never reads not
// slowing the daemon down, a stale socket, the TCP endpoint, and the socket gone at exit.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, lstatSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { controlRequest } from "../../src/trace/client.js";
import type { PacketRecord, TargetRecord } from "../../src/trace/record.js";
import { CLI } from "../helpers/cli.js";
import { initChunk, ipPacket, PROTO_UDP, sctpInIp, udpDatagram } from "../helpers/craft.js";
import { type Daemon, tryNflbIn } from "../helpers/daemon.js";
import { fragmentPacket } from "../helpers/fragment.js";
import { LbFixture } from "../helpers/lbfixture.js";
import { isRoot, type Netns } from "../helpers/netns.js";
import { makeDsrTargets, tally, tcpRequests } from "../helpers/targets.js";
import { injectViaTun } from "../helpers/tun.js";

const skip = !isRoot() && process.env.CI !== "true" ? "needs root" : false;
const VIP = "10.200.0.1";
const CLIENT = "10.100.1.10";
const NAME = "trlb";
const QUEUE = "37";
const TCP_PORT = "9411";
/** Crafted sources, routed into the client namespace through a TUN device. */
const CRAFTED_SCTP = "10.100.7.1";
const CRAFTED_FRAG = "10.100.3.10";
const FRAG_NAME = "trfrag";
const VIP_FRAG = "10.200.0.5";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Maybe<T> = T | undefined | false;

/** Polls `fn` every 50 ms until it returns a value other than undefined/false (bounded). */
async function until<T>(
  what: string,
  fn: () => Maybe<T> | Promise<Maybe<T>>,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** An `nflb trace` process in a namespace, its output collected. */
class Tracer {
  out = "";
  err = "";
  readonly exited: Promise<number | null>;
  private code: number | null | undefined;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding("utf8");
    child.stderr?.setEncoding("utf8");
    child.stdout?.on("data", (d: string) => {
      this.out += d;
    });
    child.stderr?.on("data", (d: string) => {
      this.err += d;
    });
    this.exited = new Promise((resolve) =>
      child.on("exit", (code, signal) => {
        this.code = code ?? (signal ? 128 : null);
        resolve(this.code);
      }),
    );
    // Bounded: never outlives the test.
    setTimeout(() => child.kill("SIGKILL"), 300_000).unref();
  }

  lines(): string[] {
    return this.out.split("\n").filter((l) => l !== "");
  }

  json<T>(): T[] {
    return this.lines().map((l) => JSON.parse(l) as T);
  }

  async stop(signal: NodeJS.Signals = "SIGINT"): Promise<number | null> {
    if (this.code !== undefined) return this.code;
    this.child.kill(signal);
    return this.exited;
  }
}

/** A UDP sender in `ns`: `count` datagrams of 64 bytes to host:port from `sockets` source ports. */
const BLAST = `
import dgram from "node:dgram";
const o = JSON.parse(process.argv[1]);
const payload = Buffer.alloc(64, 1);
const socks = [];
for (let i = 0; i < o.sockets; i++) {
  const s = dgram.createSocket("udp4");
  s.on("error", () => {});
  s.on("message", () => {});
  await new Promise((r) => s.bind(o.firstPort + i, r));
  socks.push(s);
}
let sent = 0, done = 0;
await new Promise((resolve) => {
  const burst = () => {
    for (let i = 0; i < o.burst && sent < o.count; i++, sent++) {
      socks[sent % socks.length].send(payload, o.port, o.host, () => { if (++done === o.count) resolve(); });
    }
    if (sent < o.count) setTimeout(burst, 1);
  };
  burst();
});
await new Promise((r) => setTimeout(r, 200));
for (const s of socks) s.close();
process.stdout.write(String(done));
`;

function blast(ns: Netns, o: { host: string; port: number; count: number; firstPort: number }) {
  const child = ns.spawn(
    process.execPath,
    ["--input-type=module", "-e", BLAST, JSON.stringify({ sockets: 16, burst: 50, ...o })],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  return new Promise<number>((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(Number(out));
      else reject(new Error(`sender failed (${code}): ${err}`));
    });
  });
}

interface QueueCounters {
  packets: number;
  queueDropped: number;
  userDropped: number;
}

describe("logs and traces", { skip }, () => {
  let f: LbFixture;
  let daemon: Daemon | undefined;
  let runDir = "";
  const savedRunDir = process.env.NFLB_RUN_DIR;
  const tracers: Tracer[] = [];
  let sport = 21000;

  /** A daemon's control socket: the only one of that name under the private run dir. */
  function socketPath(name = NAME): string {
    for (const d of readdirSync(runDir)) {
      if (d.startsWith("netns-") && existsSync(join(runDir, d, `${name}.sock`))) {
        return join(runDir, d, `${name}.sock`);
      }
    }
    throw new Error(`no control socket under ${runDir}`);
  }

  const status = async (name = NAME) =>
    (await controlRequest({ path: socketPath(name) }, { op: "status" })) as unknown as {
      mask: number;
      tracers: {
        id: number;
        selection: string[];
        dropped: number;
        lines: number;
        buffered: number;
      }[];
      rings: { queue: number; dropped: number; written: number }[];
    };

  /** Starts `nflb trace ARGS` in the lb namespace and waits until the daemon counts it. */
  function trace(...args: string[]): Promise<Tracer> {
    return traceOf(NAME, ...args);
  }

  async function traceOf(name: string, ...args: string[]): Promise<Tracer> {
    const before = (await status(name)).tracers.length;
    const t = new Tracer(
      f.topology.lb.spawn(process.execPath, [CLI, "trace", "--name", name, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    tracers.push(t);
    const deadline = Date.now() + 10_000;
    while ((await status(name)).tracers.length <= before) {
      if (Date.now() > deadline) throw new Error(`tracer did not attach: ${t.err}`);
      await sleep(50);
    }
    return t;
  }

  function counters(): QueueCounters {
    const s = JSON.parse(f.nflb("stats", "--name", NAME, "--json"));
    const q = s.queues.find((x: { queue: number }) => x.queue === Number(QUEUE));
    const k = s.kernelQueues.find((x: { queue: number }) => x.queue === Number(QUEUE));
    return {
      packets: q?.packets ?? 0,
      queueDropped: k?.queueDropped ?? 0,
      userDropped: k?.userDropped ?? 0,
    };
  }

  /** Waits until the daemon's packet counter and `tracer`'s output stop moving. */
  async function settle(tracer?: Tracer): Promise<QueueCounters> {
    let last = "";
    for (let i = 0; i < 100; i++) {
      const c = counters();
      const now = `${c.packets}/${tracer?.out.length ?? 0}`;
      if (now === last) return c;
      last = now;
      await sleep(300);
    }
    throw new Error("traffic did not settle");
  }

  function predicted(
    proto: string,
    port: number,
    dport: number,
    o = { name: NAME, src: CLIENT, vip: VIP },
  ): number {
    return Number(
      f
        .nflb(
          "fwmark",
          "--name",
          o.name,
          "--proto",
          proto,
          "--src",
          `${o.src}:${port}`,
          "--dst",
          `${o.vip}:${dport}`,
        )
        .trim(),
    );
  }

  before(async () => {
    runDir = mkdtempSync(join(tmpdir(), "nflb-run-"));
    process.env.NFLB_RUN_DIR = runDir;
    f = LbFixture.create();
    const a = f.topology.targetAddrs;
    for (const port of [8080, 8081]) await f.serveNames(port, (i) => [a[i].v4]);
    f.nflb("init", "--name", NAME);
    f.setup(NAME, "--mode", "nat", "--vip", VIP, "--queue", QUEUE, ...f.targetArgs("v4"));
    daemon = await f.daemon(NAME, QUEUE);
  });

  // A failed test leaves no tracer attached for the next one.
  afterEach(async () => {
    for (const t of tracers.splice(0)) await t.stop("SIGKILL");
  });

  after(async () => {
    await f?.close();
    if (savedRunDir === undefined) delete process.env.NFLB_RUN_DIR;
    else process.env.NFLB_RUN_DIR = savedRunDir;
    rmSync(runDir, { recursive: true, force: true });
  });

  test("the control socket is root's with mode 0600, and answers", async () => {
    const path = socketPath();
    const st = lstatSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, 0);
    const ping = await controlRequest({ path }, { op: "ping" });
    assert.equal(ping.name, NAME);
    assert.deepEqual(ping.queues, [Number(QUEUE)]);
    const s = await status();
    assert.equal(s.mask, 0, "nobody traces: the mask is 0");
    assert.deepEqual(
      s.rings.map((r) => r.queue),
      [Number(QUEUE)],
    );
  });

  test("nflb loglevel reads and sets the daemon's level; it follows at once; the log trace has every level", async () => {
    assert.ok(daemon);
    const d = daemon;
    assert.equal(f.nflb("loglevel", "--name", NAME).trim(), "info", "the daemon stored its level");
    const bad = tryNflbIn(f.topology.lb, "loglevel", "--name", NAME, "loud");
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /invalid log level "loud"/);

    f.nflb("loglevel", "--name", NAME, "warning");
    assert.equal(f.nflb("loglevel", "--name", NAME).trim(), "warning");
    await until("the level change", () => /notice: log level warning/.test(d.log()));
    let mark = d.log().length;
    // A log tracer: its attach is an info line, which stderr must not show now, but the
    // log trace shows whatever the level.
    const logs = await trace("--selection", "log");
    const other = await trace("--selection", "target");
    await other.stop();
    await until("the log trace", () => logs.out.includes("tracer"));
    assert.match(logs.out, /^log info: tracer \d+ attached/m);
    await sleep(300);
    assert.doesNotMatch(d.log().slice(mark), / (info|debug): /, "info lines at level warning");

    f.nflb("loglevel", "--name", NAME, "debug");
    assert.equal(f.nflb("loglevel", "--name", NAME).trim(), "debug");
    await until("the level change", () => /notice: log level debug/.test(d.log().slice(mark)));
    mark = d.log().length;
    await controlRequest({ path: socketPath() }, { op: "ping" });
    const third = await trace("--selection", "target");
    await third.stop();
    await until("debug and info lines", () => {
      const text = d.log().slice(mark);
      return / debug: control request/.test(text) && / info: tracer \d+ attached/.test(text);
    });
    assert.equal(await logs.stop(), 0, "SIGINT ends a tracer with status 0");
    f.nflb("loglevel", "--name", NAME, "info");
  });

  test("a trace flow on dport 8081 selects exactly the 8081 packets, each with the target nflb fwmark predicts; two tracers at once", async () => {
    f.nflb("trace-flow-set", "--name", "p8081", "--protocols", "tcp", "--dports", "8081");
    const listed = JSON.parse(f.nflb("trace-flow-list"));
    assert.equal(listed.length, 1);
    assert.equal(listed[0].name, "p8081");
    assert.equal(listed[0].target, undefined, "trace flows show no target");
    assert.deepEqual(listed[0].dports, ["8081"]);
    assert.equal(f.nflb("trace-flow-list-names").trim(), "p8081");
    // The flows of the load balancer are not touched.
    assert.deepEqual(JSON.parse(f.nflb("flow-list")), []);

    const text = await trace("--selection", "packet");
    const json = await trace("--selection", "packet,target", "--json");
    const before = await settle();

    const first = sport;
    const answers = await tcpRequests(f.topology.client, {
      host: VIP,
      port: 8081,
      count: 30,
      firstPort: first,
    });
    sport += 30;
    assert.ok(
      answers.every((x) => /^t[123]$/.test(x)),
      JSON.stringify(answers),
    );
    const mid = await settle(json);
    await settle(text);
    const packetsOf = (t: Tracer) => t.json<PacketRecord>().filter((r) => r.kind === "packet");
    const records = packetsOf(json);
    // One line per packet the daemon handled for those connections, no other.
    assert.equal(records.length, mid.packets - before.packets, "packet lines vs packets handled");
    assert.equal(text.lines().length, records.length);
    const seen = new Set<number>();
    for (const r of records) {
      assert.equal(r.kind, "packet");
      assert.equal(r.queue, Number(QUEUE));
      assert.equal(r.proto, "tcp");
      assert.equal(r.src, CLIENT);
      assert.equal(r.dst, VIP);
      assert.equal(r.dport, 8081);
      assert.ok(r.sport !== undefined && r.sport >= first && r.sport < first + 30, `${r.sport}`);
      assert.equal(r.hash, "5-tuple");
      assert.equal(r.traceFlow, "p8081");
      assert.equal(r.flow, null);
      assert.equal(r.lb, NAME);
      assert.equal(r.verdict, "accept");
      assert.equal(r.target, r.fwmark);
      seen.add(r.sport ?? 0);
    }
    assert.equal(seen.size, 30, "every connection was traced");
    for (const p of seen) {
      const mark = predicted("tcp", p, 8081);
      const lines = records.filter((r) => r.sport === p);
      assert.ok(
        lines.every((r) => r.fwmark === mark),
        `port ${p}: nflb fwmark says ${mark}`,
      );
      // ...and that target answered the connection.
      assert.equal(answers[p - first], `t${mark}`);
    }
    for (const line of text.lines()) {
      assert.match(
        line,
        /^packet q37 tcp 10\.100\.1\.10:\d+ -> 10\.200\.0\.1:8081 \(5-tuple\) lb=trlb target=(\d) fwmark=\1 trace-flow=p8081$/,
      );
    }

    // Traffic to 8080 is handled but not traced.
    const other = await tcpRequests(f.topology.client, {
      host: VIP,
      port: 8080,
      count: 30,
      firstPort: sport,
    });
    sport += 30;
    assert.equal(
      Object.values(tally(other)).reduce((n, x) => n + x, 0),
      30,
    );
    const end = await settle(json);
    assert.ok(end.packets - mid.packets >= 60, "the 8080 packets were handled");
    assert.equal(packetsOf(json).length, records.length, "no 8080 line");
    assert.equal(text.lines().length, records.length, "no 8080 line");

    // The JSON tracer also selected target: a table change shows up there only.
    f.nflb("deactivate", "--name", NAME, "3");
    const down = await until("a target record", () =>
      json.json<TargetRecord>().find((r) => r.kind === "target" && r.active === 2),
    );
    assert.deepEqual(down.fwmarks, [1, 2]);
    assert.equal(down.lb, NAME);
    f.nflb("activate", "--name", NAME, "3");
    const up = await until("a target record", () =>
      json
        .json<TargetRecord>()
        .find((r) => r.kind === "target" && r.active === 3 && r.generation > down.generation),
    );
    assert.deepEqual(up.fwmarks, [1, 2, 3]);
    assert.ok(up.generation > down.generation);
    assert.ok(text.lines().every((l) => l.startsWith("packet ")));

    assert.equal(await text.stop(), 0);
    assert.equal(await json.stop(), 0);
    await until("no tracers", async () => (await status()).tracers.length === 0);
  });

  test("a tracer that never reads neither slows the daemon down nor loses packets; its lines are dropped and counted", async (t) => {
    // Trace every packet.
    f.nflb("trace-flow-set", "--name", "all");
    const COUNT = 30_000;
    const run = async () => {
      const before = await settle();
      const t0 = Date.now();
      const [sent, answers] = await Promise.all([
        blast(f.topology.client, { host: VIP, port: 8080, count: COUNT, firstPort: 40000 }),
        tcpRequests(f.topology.client, { host: VIP, port: 8081, count: 100, firstPort: sport }),
      ]);
      sport += 100;
      const ms = Date.now() - t0;
      const after = await settle();
      return {
        sent,
        ms,
        served: answers.filter((x) => /^t[123]$/.test(x)).length,
        packets: after.packets - before.packets,
        queueDropped: after.queueDropped - before.queueDropped,
        userDropped: after.userDropped - before.userDropped,
      };
    };
    const baseline = await run();

    // The blocked tracer: asks for every packet as JSON, then never reads.
    const blocked: Socket = connect(socketPath());
    blocked.on("error", () => {});
    await new Promise((r) => blocked.once("connect", r));
    blocked.write('{"op":"trace","selection":["packet"],"json":true}\n');
    blocked.pause();
    await until("the blocked tracer", async () => (await status()).tracers.length === 1);
    // (afterEach stopped every other tracer)
    const withBlocked = await run();
    const s = await status();
    blocked.destroy();

    const report = JSON.stringify({ baseline, withBlocked, tracer: s.tracers[0], rings: s.rings });
    for (const r of [baseline, withBlocked]) {
      assert.equal(r.sent, COUNT, report);
      assert.equal(r.served, 100, `every connection served: ${report}`);
      assert.ok(r.packets >= COUNT + 300, `every datagram handled: ${report}`);
      assert.equal(r.queueDropped, 0, report);
      assert.equal(r.userDropped, 0, report);
    }
    const ratio = withBlocked.packets / baseline.packets;
    assert.ok(ratio > 0.98 && ratio < 1.02, `packets handled: ${report}`);
    assert.ok(withBlocked.ms < baseline.ms * 3 + 2000, `time: ${report}`);
    assert.ok(s.tracers[0].dropped > 0, `the blocked tracer's drop counter grows: ${report}`);
    // What waits for it is bounded by the limit (1 MiB) plus a line.
    assert.ok(s.tracers[0].buffered > 1 << 19, report);
    assert.ok(s.tracers[0].buffered < (1 << 20) + 4096, report);
    t.diagnostic(`blocked tracer: ${report}`);
    await until("no tracers", async () => (await status()).mask === 0);
    f.nflb("trace-flow-delete", "--name", "all");
  });

  test("sctp: every SCTP packet is traced with its ports, hash mode and target, no trace flow needed", async () => {
    const { client } = f.topology;
    client.sysctl("net.ipv4.ip_forward", "1");
    for (const key of ["all", "default"]) client.sysctl(`net.ipv4.conf.${key}.rp_filter`, "0");
    const sctp = await trace("--selection", "sctp", "--json");
    const packets = await trace("--selection", "packet");
    const ports = [5000, 5001, 5002, 5003, 5004, 5005];
    const tun = await injectViaTun(client, {
      routes: ["10.100.7.0/24"],
      packets: ports.map((p, i) =>
        sctpInIp(CRAFTED_SCTP, VIP, {
          sport: p,
          dport: 2905,
          vtag: 0,
          chunks: [initChunk({ initiateTag: 0x1000 + i, initialTsn: 1 })],
        }),
      ),
    });
    assert.equal(tun.rx, ports.length, JSON.stringify(tun));
    const records = await until("six sctp records", () => {
      const r = sctp.json<PacketRecord>();
      return r.length >= ports.length ? r : undefined;
    });
    await sleep(200);
    assert.equal(sctp.lines().length, ports.length, sctp.out);
    for (const [i, r] of records.entries()) {
      assert.equal(r.kind, "sctp");
      assert.equal(r.proto, "sctp");
      assert.equal(r.src, CRAFTED_SCTP);
      assert.equal(r.sport, ports[i]);
      assert.equal(r.dport, 2905);
      assert.equal(r.hash, "ports", "SCTP hashes on ports only by default");
      assert.equal(r.traceFlow, null);
      assert.equal(r.lb, NAME);
      const mark = predicted("sctp", ports[i], 2905, { name: NAME, src: CRAFTED_SCTP, vip: VIP });
      assert.equal(r.fwmark, mark);
      assert.equal(r.target, mark);
    }
    await sctp.stop();
    await packets.stop();
    assert.equal(packets.lines().length, 0, "no trace flow matches SCTP");
  });

  test("frag: fragments held, the first one, re-injection and the fragments that follow it", async () => {
    const { client, targets, targetAddrs } = f.topology;
    makeDsrTargets(f.topology, [`${VIP_FRAG}/32`]);
    for (const ns of targets)
      ns.exec("ip", ["route", "add", `${CRAFTED_FRAG}/32`, "via", "10.100.0.10"]);
    client.sysctl("net.ipv4.ip_forward", "1");
    f.setup(
      FRAG_NAME,
      "--mode",
      "dsr",
      "--vip",
      VIP_FRAG,
      "--queue",
      "38",
      "--fragments",
      "--frag-queue",
      "39",
      ...targetAddrs.flatMap((a, i) => ["--target", `${11 + i}=${a.v4}`]),
    );
    const fragDaemon = await f.daemonWith(FRAG_NAME, "--queue", "38", "--frag-queue", "39");
    const t = await traceOf(FRAG_NAME, "--selection", "frag", "--json");
    const payload = new Uint8Array(2500).map((_, i) => i & 0xff);
    const packet = ipPacket(
      CRAFTED_FRAG,
      VIP_FRAG,
      PROTO_UDP,
      udpDatagram(CRAFTED_FRAG, VIP_FRAG, 7000, 9100, payload),
      { id: 0x4242 },
    );
    const [first, ...later] = fragmentPacket(packet, 1000, 0x4242);
    assert.equal(later.length, 2);
    // The later fragments overtake the first one.
    const tun = await injectViaTun(client, {
      routes: ["10.100.3.0/24"],
      packets: [...later, first],
      intervalMs: 20,
    });
    assert.equal(tun.rx, 3);
    type Frag = {
      kind: string;
      queue: number;
      event: string;
      fragId?: number;
      fwmark?: number | null;
      count?: number;
      sport?: number;
      hash?: string;
    };
    const records = await until("six frag records", () => {
      const r = t.json<Frag>();
      return r.length >= 6 ? r : undefined;
    });
    const mark = predicted("udp", 7000, 9100, {
      name: FRAG_NAME,
      src: CRAFTED_FRAG,
      vip: VIP_FRAG,
    });
    assert.deepEqual(
      records.map((r) => [r.event, r.event === "reinjected" ? r.count : r.fwmark]),
      [
        ["held", null],
        ["held", null],
        ["first", mark],
        ["reinjected", 2],
        ["forward", mark],
        ["forward", mark],
      ],
      t.out,
    );
    assert.ok(records.every((r) => r.kind === "frag" && r.queue === 39));
    assert.equal(records[0].fragId, 0x4242);
    assert.equal(records[0].hash, "addresses");
    assert.equal(records[2].sport, 7000);
    assert.equal(records[2].hash, "5-tuple");
    assert.equal(await t.stop(), 0);
    await fragDaemon.stop();
  });

  test("kill -9 leaves a stale socket; a new daemon replaces it; the TCP endpoint", async () => {
    assert.ok(daemon);
    await daemon.stop("SIGKILL");
    const path = socketPath();
    assert.ok(lstatSync(path).isSocket(), "a killed daemon leaves its socket file");
    const dead = tryNflbIn(f.topology.lb, "trace", "--name", NAME);
    assert.equal(dead.status, 1);
    assert.match(dead.stderr, /no daemon answers on .*trlb\.sock \(ECONNREFUSED\)/);
    daemon = await f.daemonWith(NAME, "--queue", QUEUE, "--control-tcp", TCP_PORT);
    assert.match(daemon.log(), /removed the stale control socket/);
    assert.equal(lstatSync(socketPath()).mode & 0o777, 0o600);
    assert.match(daemon.log(), /control endpoint on tcp 127\.0\.0\.1:9411/);

    const overTcp = await trace("--tcp", TCP_PORT, "--selection", "target,flow-conf");
    // A tracer of targets first gets the current state, then every change. Without
    // traffic the worker looks at the tables once a second: wait for each state.
    const current = /^target q37 lb=trlb generation=\d+ active=3 fwmarks=1,2,3$/;
    await until("the current targets", () => overTcp.lines().some((l) => current.test(l)));
    f.nflb("deactivate", "--name", NAME, "1");
    const down = await until("a target line over tcp", () => {
      const i = overTcp
        .lines()
        .findIndex((l) => /^target q37 lb=trlb generation=\d+ active=2 fwmarks=2,3$/.test(l));
      return i >= 0 ? i : undefined;
    });
    f.nflb("activate", "--name", NAME, "1");
    await until("a target line over tcp", () =>
      overTcp
        .lines()
        .slice(down + 1)
        .some((l) => current.test(l)),
    );
    f.nflb("trace-flow-set", "--name", "udp53", "--protocols", "udp", "--dports", "53");
    // flow-conf: the trace flows are compiled only while someone traces packets.
    const pk = await trace("--selection", "packet");
    await tcpRequests(f.topology.client, { host: VIP, port: 8080, count: 2, firstPort: sport });
    sport += 2;
    await until("a flow-conf line", () =>
      overTcp.lines().some((l) => l === "flow-conf q37 trace-flows 2: p8081, udp53"),
    );
    await pk.stop();
    assert.equal(pk.lines().length, 0, "no 8080 packet matches p8081 or udp53");
    assert.equal(await overTcp.stop(), 0);
  });

  test("when the daemon exits, tracers are told and exit 1, and the socket file is gone", async () => {
    const path = socketPath();
    const t = await trace("--selection", "log");
    assert.ok(daemon);
    assert.equal(await daemon.stop("SIGTERM"), 0);
    daemon = undefined;
    assert.equal(await t.exited, 1);
    assert.match(t.err, /the daemon went away/);
    assert.match(t.out, /log notice: SIGTERM: stopping/);
    assert.equal(existsSync(path), false, "socket file removed");
    const none = tryNflbIn(f.topology.lb, "trace", "--name", NAME);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no daemon answers on .*\(ENOENT\)/);
  });
});
