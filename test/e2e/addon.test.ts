// The native addon end to end: loading (also in worker threads), netlink socket calls,
// uv polling, shared mappings, flock, and a TUN device inside a fresh network namespace.
// Netlink traffic here is NLMSG_NOOP to the kernel: it changes nothing.
import assert from "node:assert/strict";
import { closeSync, ftruncateSync, openSync, unlinkSync } from "node:fs";
import { after, test } from "node:test";
import { Worker } from "node:worker_threads";
import { LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN, loadAddon } from "../../src/native/addon.js";
import { isRoot, Topology } from "../helpers/netns.js";

const a = loadAddon();
const addonUrl = new URL("../../src/native/addon.js", import.meta.url).href;
const needRoot = !isRoot() && process.env.CI !== "true" ? "needs root" : false;

/** NLMSG_NOOP with NLM_F_REQUEST|NLM_F_ACK: the kernel answers with a 36-byte ACK
 * (or an EPERM error without CAP_NET_ADMIN): a way to make a netlink socket readable. */
function noop(seq: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, 16, true);
  v.setUint16(4, 1, true);
  v.setUint16(6, 5, true);
  v.setUint32(8, seq, true);
  return b;
}

const shmFiles: string[] = [];
after(() => {
  for (const f of shmFiles) {
    try {
      unlinkSync(f);
    } catch {
      // already gone
    }
  }
});

function shmFile(size: number): string {
  const path = `/dev/shm/nflb-addon-test-${process.pid}-${shmFiles.length}`;
  shmFiles.push(path);
  const fd = openSync(path, "w+", 0o600);
  ftruncateSync(fd, size);
  closeSync(fd);
  return path;
}

test("exports the documented functions and errno constants", () => {
  for (const f of [
    "nlOpen",
    "nlPortId",
    "nlRecvBatch",
    "nlSend",
    "nlRecvOne",
    "pollStart",
    "pollStop",
    "fdClose",
    "fdWrite",
    "mmapShared",
    "flock",
    "tunOpen",
    "strerror",
  ]) {
    assert.equal(typeof (a as unknown as Record<string, unknown>)[f], "function", f);
  }
  assert.equal(a.errno.EPERM, 1);
  assert.equal(a.errno.EAGAIN, 11);
  assert.equal(a.errno.EBUSY, 16);
  assert.equal(a.errno.ENOBUFS, 105);
  assert.equal(a.strerror(-a.errno.EPERM), "Operation not permitted");
  assert.equal(a.strerror(a.errno.EBUSY), "Device or resource busy");
});

test("bad arguments throw TypeError; failing syscalls return -errno", () => {
  const buf = new Uint8Array(100);
  const lens = new Int32Array(4);
  assert.throws(() => a.nlRecvBatch(0, buf, 64, 4, lens), TypeError); // 256 B > buf
  assert.throws(() => a.nlRecvBatch(0, buf, 10, 2000, new Int32Array(2000)), TypeError);
  assert.throws(() => a.nlSend(0, buf, 101), TypeError);
  assert.throws(() => a.nlSend("x" as unknown as number, buf, 1), TypeError);
  assert.throws(() => a.fdWrite(0, new Uint16Array(4) as unknown as Uint8Array, 1), TypeError);
  assert.equal(a.nlSend(987654, buf, 16), -a.errno.EBADF);
  assert.equal(a.fdWrite(987654, buf, 1), -a.errno.EBADF);
  assert.equal(a.fdClose(987654), -a.errno.EBADF);
  assert.equal(a.nlRecvBatch(987654, buf, 10, 4, lens), -a.errno.EBADF);
  assert.equal(a.flock(987654, LOCK_EX), -a.errno.EBADF);
});

test("netlink socket: empty reads, ACK via recvmmsg, truncation marker, timeouts", () => {
  const fd = a.nlOpen(1 << 20);
  assert.ok(fd >= 0, `nlOpen: ${a.strerror(fd)}`);
  try {
    assert.ok(a.nlPortId(fd) !== 0);
    const buf = new Uint8Array(4 * 256);
    const lens = new Int32Array(4);
    assert.equal(a.nlRecvBatch(fd, buf, 256, 4, lens), 0);
    assert.equal(a.nlRecvOne(fd, buf, 20), 0);
    assert.equal(a.nlSend(fd, noop(1), 16), 16);
    assert.equal(a.nlSend(fd, noop(2), 16), 16);
    assert.equal(a.nlRecvBatch(fd, buf, 256, 4, lens), 2);
    assert.deepEqual([...lens.subarray(0, 2)], [36, 36]);
    const v = new DataView(buf.buffer);
    assert.equal(v.getUint16(4, true), 2); // NLMSG_ERROR
    assert.equal(v.getUint32(256 + 28, true), 2); // the second ACK echoes seq 2
    // a slot too small: the datagram is cut and flagged by a negative length
    assert.equal(a.nlSend(fd, noop(3), 16), 16);
    assert.equal(a.nlRecvBatch(fd, buf, 20, 4, lens), 1);
    assert.equal(lens[0], -20);
    assert.equal(a.nlSend(fd, noop(4), 16), 16);
    assert.equal(a.nlRecvOne(fd, buf, 1000), 36);
  } finally {
    assert.equal(a.fdClose(fd), 0);
  }
});

test("pollStart calls back when readable; pollStop lets the loop go", async () => {
  const fd = a.nlOpen(0);
  assert.ok(fd >= 0);
  let calls = 0;
  const buf = new Uint8Array(256);
  const fired = new Promise<void>((resolve) => {
    const h = a.pollStart(fd, (status) => {
      assert.equal(status, 0);
      calls++;
      assert.ok(a.nlRecvOne(fd, buf, 0) > 0);
      a.pollStop(h);
      a.pollStop(h); // idempotent
      resolve();
    });
  });
  a.nlSend(fd, noop(1), 16);
  await fired;
  a.fdClose(fd);
  assert.equal(calls, 1);
});

test("loads in worker threads; poll works there; teardown with an active poll is clean", async () => {
  const shm = shmFile(4096);
  const fd = openSync(shm, "r+");
  const main = new Uint32Array(a.mmapShared(fd, 4096));
  main[0] = 0x1234;
  const code = `
    const { parentPort, workerData } = require("node:worker_threads");
    const fs = require("node:fs");
    import(workerData.addonUrl).then(({ loadAddon }) => {
      const a = loadAddon();
      const fd = fs.openSync(workerData.shm, "r+");
      const m = new Uint32Array(a.mmapShared(fd, 4096));
      m[1] = 0xcafe;
      const s = a.nlOpen(0);
      const b = new Uint8Array(16);
      const v = new DataView(b.buffer);
      v.setUint32(0, 16, true); v.setUint16(4, 1, true); v.setUint16(6, 5, true);
      const h = a.pollStart(s, () => {
        a.nlRecvOne(s, new Uint8Array(64), 0);
        parentPort.postMessage({ fired: true, seen: m[0], eagain: a.errno.EAGAIN });
        if (workerData.stop) { a.pollStop(h); a.fdClose(s); parentPort.close(); }
      });
      a.nlSend(s, b, 16);
    });`;
  for (const stop of [true, false]) {
    const w = new Worker(code, { eval: true, workerData: { addonUrl, shm, stop } });
    // Listen for the exit at once: a worker that stops by itself may be gone before the
    // message has been awaited.
    const exited = new Promise<number>((resolve) => w.once("exit", resolve));
    const msg = await new Promise<{ fired: boolean; seen: number; eagain: number }>(
      (resolve, reject) => {
        w.once("message", resolve);
        w.once("error", reject);
      },
    );
    assert.deepEqual(msg, { fired: true, seen: 0x1234, eagain: 11 });
    assert.equal(main[1], 0xcafe);
    main[1] = 0;
    // stop: the loop empties and the worker ends by itself (0); otherwise terminate()
    // must not abort the process on the still-open uv handle (cleanup hook closes it).
    const exit = await (stop ? exited : w.terminate());
    assert.equal(exit, stop ? 0 : 1);
  }
  closeSync(fd);
});

test("mmapShared: two mappings of one /dev/shm file see each other's writes", () => {
  const path = shmFile(8192);
  const fd1 = openSync(path, "r+");
  const fd2 = openSync(path, "r+");
  try {
    const m1 = new Uint32Array(a.mmapShared(fd1, 8192));
    const m2 = new Uint32Array(a.mmapShared(fd2, 8192));
    assert.equal(m1.length, 2048);
    m1[2047] = 0xdeadbeef;
    assert.equal(m2[2047], 0xdeadbeef);
    Atomics.add(m2, 5, 7);
    assert.equal(Atomics.load(m1, 5), 7);
    assert.throws(() => a.mmapShared(fd1, 0), TypeError);
    assert.throws(
      () => a.mmapShared(987654, 4096),
      (e: Error & { code?: string }) => e.code === "EBADF",
    );
  } finally {
    closeSync(fd1);
    closeSync(fd2);
  }
});

test("flock excludes across open file descriptions", () => {
  const path = shmFile(64);
  const fd1 = openSync(path, "r+");
  const fd2 = openSync(path, "r+");
  try {
    assert.equal(a.flock(fd1, LOCK_EX), 0);
    assert.equal(a.flock(fd2, LOCK_EX | LOCK_NB), -a.errno.EWOULDBLOCK);
    assert.equal(a.flock(fd2, LOCK_SH | LOCK_NB), -a.errno.EWOULDBLOCK);
    assert.equal(a.flock(fd1, LOCK_UN), 0);
    assert.equal(a.flock(fd2, LOCK_SH | LOCK_NB), 0);
    assert.equal(a.flock(fd1, LOCK_SH | LOCK_NB), 0); // shared with shared
    assert.equal(a.flock(fd1, LOCK_EX | LOCK_NB), -a.errno.EWOULDBLOCK);
    assert.equal(a.flock(fd2, LOCK_UN), 0);
    assert.equal(a.flock(fd1, LOCK_EX | LOCK_NB), 0); // upgrade once alone
  } finally {
    closeSync(fd1);
    closeSync(fd2);
  }
});

test("tunOpen in a fresh network namespace; fdWrite injects a packet", { skip: needRoot }, () => {
  const topo = new Topology();
  try {
    const ns = topo.add("tun");
    // 10.99.0.2 -> 10.99.0.1 UDP, both addresses inside the namespace only.
    const script = `
      import { loadAddon } from ${JSON.stringify(addonUrl)};
      import { execFileSync } from "node:child_process";
      import { readFileSync } from "node:fs";
      const a = loadAddon();
      const t = a.tunOpen("nflbtun%d");
      execFileSync("ip", ["addr", "add", "10.99.0.1/24", "dev", t.name]);
      execFileSync("ip", ["link", "set", t.name, "up"]);
      const rx = () => Number(readFileSync("/sys/class/net/" + t.name + "/statistics/rx_packets", "utf8"));
      const before = rx();
      const p = new Uint8Array(28);
      const v = new DataView(p.buffer);
      v.setUint8(0, 0x45); v.setUint16(2, 28); v.setUint8(8, 64); v.setUint8(9, 17);
      p.set([10, 99, 0, 2], 12); p.set([10, 99, 0, 1], 16);
      let sum = 0;
      for (let i = 0; i < 20; i += 2) sum += v.getUint16(i);
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      v.setUint16(10, ~sum & 0xffff);
      v.setUint16(20, 40000); v.setUint16(22, 9); v.setUint16(24, 8);
      const n = a.fdWrite(t.fd, p, p.length);
      const afterCount = rx();
      let tooLong = "";
      try { a.tunOpen("x".repeat(20)); } catch (e) { tooLong = e.message; }
      console.log(JSON.stringify({ name: t.name, fd: t.fd, n, before, after: afterCount, tooLong }));
    `;
    const out = JSON.parse(
      ns.exec(process.execPath, ["--input-type=module", "-e", script]).trim(),
    ) as { name: string; fd: number; n: number; before: number; after: number; tooLong: string };
    assert.match(out.name, /^nflbtun\d+$/);
    assert.ok(out.fd > 2);
    assert.equal(out.n, 28);
    assert.equal(out.after, out.before + 1);
    assert.match(out.tooLong, /longer than 15/);
  } finally {
    topo.destroy();
  }
});

test("tunOpen failure is a clear Error with the errno name", { skip: needRoot }, () => {
  const topo = new Topology();
  try {
    const ns = topo.add("tunfail");
    // "lo" exists and is not a TUN device: TUNSETIFF fails.
    const script = `
      import { loadAddon } from ${JSON.stringify(addonUrl)};
      try { loadAddon().tunOpen("lo"); console.log("no error"); }
      catch (e) { console.log(JSON.stringify({ message: e.message, code: e.code })); }
    `;
    const out = JSON.parse(ns.exec(process.execPath, ["--input-type=module", "-e", script]));
    assert.match(out.message, /^TUNSETIFF: /);
    assert.match(out.code, /^E[A-Z]+$/);
  } finally {
    topo.destroy();
  }
});
