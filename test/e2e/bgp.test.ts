// VIP announcement through real BIRD daemons in namespaces: a router with multipath and
// three instances, each with its own BIRD and an announcer process (the stand-in for
// `nflb run`). Proves: ECMP with one next hop per announcing instance (IPv4 and IPv6),
// nothing announced before the service is ready, withdrawal when it stops being served,
// on a graceful stop and on kill -9 (each measured), VIP-set and community/MED changes
// without any session reset, and clear errors when BIRD is missing, down or refuses.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import {
  DEFAULT_DEVICE,
  parseBirdTime,
  type ServiceFacts,
  type VipAnnouncement,
} from "../../src/bgp/index.js";
import {
  Announcer,
  type BgpLab,
  bgpLab,
  CLIENT4,
  holdDevice,
  instanceConf,
  LAB_HOLD_S,
  nextHops,
  waitEstablished,
  waitForHops,
} from "../helpers/bgplab.js";
import { isRoot } from "../helpers/netns.js";

const VIP4 = "10.73.9.1/32";
const VIP6 = "fd73:9::1/128";
const VIP4B = "10.73.9.2/32";
const ROUTER_SESSIONS = ["lb1_v4", "lb1_v6", "lb2_v4", "lb2_v6", "lb3_v4", "lb3_v6"];
const INSTANCE_SESSIONS = ["nflb_10_73_0_1", "nflb_fd73__1"];

function service(vips: VipAnnouncement[], over: Partial<ServiceFacts> = {}): ServiceFacts {
  return {
    service: "web",
    vips,
    rulesInstalled: true,
    dataPlaneRunning: true,
    warm: true,
    healthy: 3,
    minHealthy: 1,
    ...over,
  };
}

const BASE_VIPS: VipAnnouncement[] = [
  { prefix: VIP4, communities: ["65001:100"] },
  { prefix: VIP6, communities: [] },
];

/** `birdc show route all` of the router for one prefix: its BGP attributes as text. */
function routerRoute(lab: BgpLab, prefix: string): string {
  return lab.routerBird.birdc(["show", "route", "all", "for", prefix]);
}

const log: string[] = [];
const report = (line: string) => {
  log.push(line);
  process.stdout.write(`# ${line}\n`);
};

describe("BGP announcement through BIRD", { skip: !isRoot() && "needs root" }, () => {
  let lab: BgpLab;
  const announcers: Announcer[] = [];

  before(async () => {
    lab = await bgpLab(3, { client: true });
    for (const inst of lab.instances) {
      const { announcer, started } = await Announcer.start(inst.ns, { spec: inst.spec });
      assert.equal(started.ok, true, JSON.stringify(started));
      assert.equal(started.result.bird.ok, true, JSON.stringify(started.result));
      announcers.push(announcer);
    }
    await waitEstablished(lab.routerBird, ROUTER_SESSIONS);
  });

  after(async () => {
    for (const a of announcers) a.kill();
    await lab?.destroy();
  });

  test("nothing is announced before the service is ready", async () => {
    // Warming up (no health results yet), however many targets look healthy.
    const r = await announcers[0].send({
      cmd: "update",
      services: [service(BASE_VIPS, { warm: false })],
    });
    assert.equal(r.ok, true, JSON.stringify(r));
    const vip = r.snapshot.vips.find((v: { prefix: string }) => v.prefix === VIP4);
    assert.equal(vip.announced, false);
    assert.match(vip.reason, /warming up/);
    const r2 = await announcers[0].send({
      cmd: "update",
      services: [service(BASE_VIPS, { dataPlaneRunning: false })],
    });
    assert.match(r2.snapshot.vips[0].reason, /data plane not running/);
    // Nothing in the instance's BIRD, nothing at the router (give BGP time to carry it).
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(nextHops(lab.router, VIP4), []);
    assert.deepEqual(nextHops(lab.router, VIP6), []);
    const table = lab.instances[0].bird.birdc(["show", "route", "table", "nflb4"]);
    assert.doesNotMatch(table, /10\.73\.9\.1/);
  });

  test("every serving instance is one next hop of the router's ECMP route (IPv4 and IPv6)", async () => {
    const t0 = performance.now();
    for (const a of announcers) {
      const r = await a.send({ cmd: "update", services: [service(BASE_VIPS)] });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.result.bird.ok, true, JSON.stringify(r.result));
      assert.deepEqual(
        r.snapshot.vips.map((v: { announced: boolean }) => v.announced),
        [true, true],
      );
    }
    const all4 = lab.instances.map((i) => i.addr4).sort();
    const all6 = lab.instances.map((i) => i.addr6).sort();
    const ms = await waitForHops(lab.router, VIP4, (h) => h.join() === all4.join(), t0);
    await waitForHops(lab.router, VIP6, (h) => h.join() === all6.join(), t0);
    report(
      `three instances announced, ECMP route complete at the router after ${ms.toFixed(0)} ms`,
    );
    assert.match(routerRoute(lab, VIP4), /BGP\.community: \(65001,100\)/);

    // The router hashes on ports too: connections from one client spread over all three.
    const chosen = new Map<string, number>();
    for (let sport = 20000; sport < 20060; sport++) {
      const out = lab.router.exec("ip", [
        "-j",
        "route",
        "get",
        VIP4.split("/")[0],
        "from",
        CLIENT4,
        "iif",
        "front",
        "ipproto",
        "tcp",
        "sport",
        String(sport),
        "dport",
        "80",
      ]);
      const hop = (JSON.parse(out) as { gateway: string }[])[0].gateway;
      chosen.set(hop, (chosen.get(hop) ?? 0) + 1);
    }
    assert.deepEqual([...chosen.keys()].sort(), all4);
    for (const [hop, n] of chosen) assert.ok(n >= 5, `${hop}: ${n} of 60 flows`);
  });

  test("a VIP-set change and a community/MED change reset no session; the router sees them", async () => {
    const routerBefore = lab.routerBird.protocols();
    const instBefore = lab.instances.map((i) => i.bird.protocols());
    const changed: VipAnnouncement[] = [
      { prefix: VIP4, communities: ["65001:200", "65001:1:2"], med: 50 },
      { prefix: VIP6, communities: ["65001:6"], med: 60 },
      { prefix: VIP4B, communities: [] },
    ];
    const t0 = performance.now();
    for (const a of announcers) {
      const r = await a.send({ cmd: "update", services: [service(changed)] });
      assert.equal(r.result.bird.ok, true, JSON.stringify(r.result));
    }
    const all4 = lab.instances.map((i) => i.addr4).sort();
    await waitForHops(lab.router, VIP4B, (h) => h.join() === all4.join(), t0);
    // The new attributes arrive (same MED on every instance: ECMP stays).
    const deadline = Date.now() + 5000;
    let route = "";
    while (Date.now() < deadline) {
      route = routerRoute(lab, VIP4);
      if (/BGP\.med: 50/.test(route)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(route, /BGP\.med: 50/);
    assert.match(route, /BGP\.community: \(65001,200\)/);
    assert.match(route, /BGP\.large_community: \(65001, 1, 2\)/);
    assert.doesNotMatch(route, /\(65001,100\)/);
    const route6 = routerRoute(lab, VIP6);
    assert.match(route6, /BGP\.med: 60/);
    assert.match(route6, /BGP\.community: \(65001,6\)/);
    assert.equal(nextHops(lab.router, VIP4).length, 3, "MED equal on all instances: still ECMP");

    // And the VIP set shrinks again.
    for (const a of announcers) {
      await a.send({ cmd: "update", services: [service(changed.slice(0, 2))] });
    }
    await waitForHops(lab.router, VIP4B, (h) => h.length === 0, performance.now());

    // Not one session went down: same state, same "since" on both ends (BIRD converts
    // its monotonic clock to wall time when it prints, which can move the ms by one).
    const sameSince = (a?: string, b?: string) => {
      const ms = parseBirdTime(a ?? "", Date.now());
      const ms2 = parseBirdTime(b ?? "", Date.now());
      return ms !== undefined && ms2 !== undefined && Math.abs(ms - ms2) <= 5;
    };
    const routerAfter = lab.routerBird.protocols();
    for (const name of ROUTER_SESSIONS) {
      const [was, is] = [routerBefore.get(name), routerAfter.get(name)];
      assert.equal(is?.info, "Established", name);
      assert.ok(sameSince(was?.since, is?.since), `${name} since ${was?.since} -> ${is?.since}`);
    }
    for (const [i, inst] of lab.instances.entries()) {
      const p = inst.bird.protocols();
      for (const name of INSTANCE_SESSIONS) {
        const [was, is] = [instBefore[i].get(name), p.get(name)];
        assert.equal(is?.info, "Established", `lb${i + 1} ${name}`);
        assert.ok(
          sameSince(was?.since, is?.since),
          `lb${i + 1} ${name} since ${was?.since} -> ${is?.since}`,
        );
      }
    }
  });

  test("status: sessions from BIRD, VIP state with since and transitions", async () => {
    const r = await announcers[0].send({ cmd: "status" });
    assert.equal(r.ok, true, JSON.stringify(r));
    const s = r.status;
    assert.equal(s.bird.ok, true);
    assert.deepEqual(s.device, { name: DEFAULT_DEVICE, held: true, up: true });
    assert.deepEqual(
      s.sessions.map((x: { neighbor: string; state: string; up: boolean; bfd: string }) => [
        x.neighbor,
        x.state,
        x.up,
        x.bfd,
      ]),
      [
        ["10.73.0.1", "Established", true, "Up"],
        ["fd73::1", "Established", true, "Up"],
      ],
    );
    for (const x of s.sessions) {
      const since = Date.parse(x.since);
      assert.ok(Date.now() - since < 120_000 && Date.now() - since >= 0, x.since);
    }
    const vip = s.vips.find((v: { prefix: string }) => v.prefix === VIP4);
    assert.equal(vip.announced, true);
    assert.equal(vip.transitions, 1);
    assert.deepEqual(vip.communities, ["65001:200", "65001:1:2"]);
    assert.equal(vip.med, 50);
    assert.match(vip.reason, /^served/);
  });

  test("too few healthy targets withdraws this instance's next hop, recovery announces it", async () => {
    const inst = lab.instances[2];
    const vips = [
      { prefix: VIP4, communities: ["65001:200", "65001:1:2"], med: 50 },
      { prefix: VIP6, communities: ["65001:6"], med: 60 },
    ];
    let t0 = performance.now();
    let r = await announcers[2].send({
      cmd: "update",
      services: [service(vips, { healthy: 1, minHealthy: 2 })],
    });
    assert.deepEqual(
      r.result.changes.map((c: { announced: boolean }) => c.announced),
      [false, false],
    );
    assert.match(r.snapshot.vips[0].reason, /1 healthy target, min-healthy 2/);
    const down = await waitForHops(lab.router, VIP4, (h) => !h.includes(inst.addr4), t0);
    report(`too few healthy targets: next hop gone at the router after ${down.toFixed(0)} ms`);
    t0 = performance.now();
    r = await announcers[2].send({ cmd: "update", services: [service(vips)] });
    await waitForHops(lab.router, VIP4, (h) => h.includes(inst.addr4), t0);
    await waitForHops(lab.router, VIP6, (h) => h.includes(inst.addr6), t0);
  });

  test("a graceful stop withdraws the instance (measured)", async () => {
    const inst = lab.instances[0];
    const t0 = performance.now();
    const stopped = announcers[0].send({ cmd: "stop" });
    const ms4 = await waitForHops(lab.router, VIP4, (h) => !h.includes(inst.addr4), t0);
    const ms6 = await waitForHops(lab.router, VIP6, (h) => !h.includes(inst.addr6), t0);
    const r = await stopped;
    const returned = performance.now() - t0;
    assert.equal(r.ok, true, JSON.stringify(r));
    report(
      `graceful stop: next hop gone at the router after ${ms4.toFixed(0)} ms (IPv4), ${ms6.toFixed(0)} ms (IPv6); stop() returned after ${returned.toFixed(0)} ms`,
    );
    assert.ok(ms4 < 2000 && ms6 < 2000);
    assert.equal(nextHops(lab.router, VIP4).length, 2);
    // The include it leaves announces nothing.
    const status = await announcers[0].send({ cmd: "status" });
    assert.equal(status.status.device.held, false);
    assert.ok(status.status.vips.every((v: { announced: boolean }) => !v.announced));
    await announcers[0].send({ cmd: "exit" });
  });

  test("kill -9 of the announcing process withdraws it (measured), a restart waits for readiness", async () => {
    const inst = lab.instances[1];
    const t0 = performance.now();
    announcers[1].kill("SIGKILL");
    const ms4 = await waitForHops(lab.router, VIP4, (h) => !h.includes(inst.addr4), t0);
    const ms6 = await waitForHops(lab.router, VIP6, (h) => !h.includes(inst.addr6), t0);
    report(
      `kill -9: next hop gone at the router after ${ms4.toFixed(0)} ms (IPv4), ${ms6.toFixed(0)} ms (IPv6)`,
    );
    assert.ok(ms4 < 1000 && ms6 < 1000, `goal under 1 s: ${ms4}, ${ms6}`);
    await announcers[1].exited();

    // BIRD still runs the dead process's configuration, VIPs included. Their device held
    // but down (as a new announcer takes it) announces nothing; up, it would.
    const routes = () => inst.bird.birdc(["show", "route", "table", "nflb4"]);
    const holder = await holdDevice(inst.ns, DEFAULT_DEVICE);
    await new Promise((r) => setTimeout(r, 300));
    assert.doesNotMatch(routes(), /10\.73\.9\.1\/32/, "held-down device: no route in BIRD");
    await holder.setUp();
    const deadline = Date.now() + 2000;
    while (!/10\.73\.9\.1\/32/.test(routes()) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(routes(), /10\.73\.9\.1\/32/, "the stale route comes back with the device up");
    await holder.close();

    // So a new process, which takes the device down and has BIRD load a configuration
    // without VIPs before setting it up, announces nothing before its own facts say so.
    const { announcer, started } = await Announcer.start(inst.ns, { spec: inst.spec });
    announcers[1] = announcer;
    assert.equal(started.result.bird.ok, true, JSON.stringify(started));
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!nextHops(lab.router, VIP4).includes(inst.addr4), "announced before ready");
    const t1 = performance.now();
    await announcer.send({
      cmd: "update",
      services: [service([{ prefix: VIP4, communities: ["65001:200", "65001:1:2"], med: 50 }])],
    });
    await waitForHops(lab.router, VIP4, (h) => h.includes(inst.addr4), t1);
  });

  test("kill -9 of an instance's BIRD: its kernel closes the session, the router withdraws (measured)", async () => {
    const inst = lab.instances[2];
    assert.ok(nextHops(lab.router, VIP4).includes(inst.addr4));
    const t0 = performance.now();
    await inst.bird.kill();
    const ms = await waitForHops(lab.router, VIP4, (h) => !h.includes(inst.addr4), t0, 5000);
    report(
      `kill -9 of BIRD: next hop gone at the router after ${ms.toFixed(0)} ms (TCP closed by the kernel)`,
    );
    assert.ok(ms < 2000, `${ms}`);
  });

  test("BIRD down, refusing, or missing: clear one-line errors", async () => {
    const inst = lab.instances[2];
    // Down (killed above): the update says so, and nothing claims to be announced.
    const down = await announcers[2].send({
      cmd: "update",
      services: [service(BASE_VIPS, { healthy: 2 })],
    });
    assert.equal(down.result.bird.ok, false);
    assert.equal(down.result.bird.kind, "down");
    // Killed, it leaves its socket file behind: "refuses connections (a stale socket?)".
    assert.match(
      down.result.bird.message,
      /^BIRD is not running: (no control socket at|control socket) /,
    );
    assert.ok(down.result.bird.message.includes(inst.bird.socket));
    assert.ok(down.snapshot.vips.every((v: { announced: boolean }) => !v.announced));
    assert.match(down.snapshot.vips[0].reason, /not announced: BIRD is not running/);

    // BIRD back: the next update sees it and announces again.
    await inst.bird.start();
    const back = await announcers[2].send({ cmd: "update", services: [service(BASE_VIPS)] });
    assert.equal(back.result.bird.ok, true, JSON.stringify(back.result));
    await waitForHops(lab.router, VIP4, (h) => h.includes(inst.addr4), performance.now(), 15_000);

    // The operator breaks bird.conf: BIRD refuses, says where, keeps running the old one,
    // and nflb's file goes back to what BIRD runs. Adding a VIP: the others stay announced.
    const broken = `${instanceConf(inst.spec.bird.include)}protocol bogus {}\n`;
    writeFileSync(inst.bird.conf, broken);
    const refused = await announcers[2].send({
      cmd: "update",
      services: [service([...BASE_VIPS, { prefix: VIP4B, communities: [] }])],
    });
    assert.equal(refused.result.bird.kind, "refused", JSON.stringify(refused.result));
    assert.match(
      refused.result.bird.message,
      new RegExp(`^BIRD refuses the configuration: ${join(inst.dir, "bird.conf")}:\\d+:\\d+ `),
    );
    assert.doesNotMatch(refused.result.bird.message, /\n/);
    assert.doesNotMatch(readFileSync(inst.spec.bird.include, "utf8"), /10\.73\.9\.2/);
    assert.equal(refused.snapshot.device.up, true);
    assert.ok(nextHops(lab.router, VIP4).includes(inst.addr4));

    // Withdrawing while BIRD refuses: BIRD would keep announcing a VIP that is not
    // served, so everything is withdrawn (the device goes down).
    const t0 = performance.now();
    const unsafe = await announcers[2].send({
      cmd: "update",
      services: [service(BASE_VIPS, { healthy: 0 })],
    });
    assert.equal(unsafe.result.bird.kind, "refused");
    assert.equal(unsafe.snapshot.device.up, false);
    await waitForHops(lab.router, VIP4, (h) => !h.includes(inst.addr4), t0);
    await waitForHops(lab.router, VIP6, (h) => !h.includes(inst.addr6), t0);

    // bird.conf without the include line: said so.
    writeFileSync(inst.bird.conf, "protocol device {\n}\n");
    const unwired = await announcers[2].send({ cmd: "update", services: [service(BASE_VIPS)] });
    assert.equal(unwired.result.bird.kind, "unwired");
    assert.equal(
      unwired.result.bird.message,
      `BIRD runs without nflb's configuration: add the line include "${inst.spec.bird.include}"; to its bird.conf`,
    );
    assert.equal(unwired.snapshot.device.up, false);

    // Repaired: the next update announces again.
    writeFileSync(inst.bird.conf, instanceConf(inst.spec.bird.include));
    const t1 = performance.now();
    const repaired = await announcers[2].send({ cmd: "update", services: [service(BASE_VIPS)] });
    assert.equal(repaired.result.bird.ok, true, JSON.stringify(repaired.result));
    assert.equal(repaired.snapshot.device.up, true);
    await waitForHops(lab.router, VIP4, (h) => h.includes(inst.addr4), t1, 15_000);

    // Missing: no birdc at all.
    const { started } = await Announcer.start(inst.ns, {
      spec: inst.spec,
      device: "nflb_bgp_x",
      birdc: "/nonexistent/birdc",
    });
    assert.equal(started.ok, false);
    assert.equal(started.error.kind, "missing");
    assert.match(started.error.message, /^BIRD is not installed: \/nonexistent\/birdc not found/);

    // A second announcer in the same namespace cannot take the device.
    const second = await Announcer.start(inst.ns, { spec: inst.spec });
    assert.equal(second.started.ok, false);
    assert.equal(second.started.error.kind, "device");
    assert.match(second.started.error.message, /another process holds it/);
  });

  test("an instance that goes silent (link cut, no FIN): BFD withdraws it well before the hold time (measured)", async () => {
    const inst = lab.instances[2];
    await waitEstablished(lab.routerBird, ["lb3_v4", "lb3_v6"]);
    await waitForHops(lab.router, VIP4, (h) => h.includes(inst.addr4), performance.now(), 10_000);
    // The instance's port on the switch goes down: its packets stop, nobody says so.
    const port = lab.portOf(inst.ns);
    const t0 = performance.now();
    lab.sw.exec("ip", ["link", "set", port, "down"]);
    const ms = await waitForHops(lab.router, VIP4, (h) => !h.includes(inst.addr4), t0, 8000);
    report(
      `silent instance (BFD 100 ms x 3, hold time ${LAB_HOLD_S} s): next hop gone after ${ms.toFixed(0)} ms`,
    );
    assert.ok(ms < 1500, `BFD should take ~300 ms, not the ${LAB_HOLD_S} s hold time: ${ms}`);
  });
});
