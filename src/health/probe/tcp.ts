// tcp: the target accepts a connection on the port. The connection is closed with a reset
// right away, as HAProxy does, so thousands of checks leave no TIME_WAIT sockets behind.
import { connect } from "node:net";
import type { TcpCheck } from "../spec.js";
import { attempt, describeError, type ProbeOutcome } from "./attempt.js";

export function probeTcp(
  address: string,
  port: number,
  spec: TcpCheck,
  signal?: AbortSignal,
): Promise<ProbeOutcome> {
  return attempt(spec.timeoutMs, signal, (finish, onDone) => {
    const socket = connect({ host: address, port, localAddress: spec.source });
    let connected = false;
    onDone(() => (connected ? socket.resetAndDestroy() : socket.destroy()));
    socket.once("connect", () => {
      connected = true;
      finish(true, "connected");
    });
    socket.on("error", (err) => finish(false, describeError(err)));
  });
}
