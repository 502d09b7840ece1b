// udp: send a payload, expect a reply (optionally matching a regular expression). The
// socket is connected, so the kernel delivers only the target's replies, and an ICMP port
// unreachable comes back as ECONNREFUSED: an immediate failure instead of a timeout.
import { createSocket } from "node:dgram";
import { isIP } from "node:net";
import type { UdpCheck } from "../spec.js";
import { attempt, describeError, type ProbeOutcome, regexOf } from "./attempt.js";

export function probeUdp(
  address: string,
  port: number,
  spec: UdpCheck,
  signal?: AbortSignal,
): Promise<ProbeOutcome> {
  return attempt(spec.timeoutMs, signal, (finish, onDone) => {
    const v6 = isIP(address) === 6;
    const socket = createSocket(v6 ? "udp6" : "udp4");
    onDone(() => socket.close());
    socket.on("error", (err: NodeJS.ErrnoException) =>
      finish(false, err.code === "ECONNREFUSED" ? "port unreachable" : describeError(err)),
    );
    socket.on("message", (msg: Buffer) => {
      if (spec.expect === undefined) return finish(true, "reply");
      const ok = regexOf(spec.expect).test(msg.toString("latin1"));
      finish(ok, ok ? "reply" : "reply mismatch");
    });
    socket.bind({ address: spec.source ?? (v6 ? "::" : "0.0.0.0"), port: 0 }, () => {
      socket.connect(port, address, () => {
        socket.send(spec.send, (err) => {
          if (err) finish(false, describeError(err));
        });
      });
    });
  });
}
