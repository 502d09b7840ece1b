// Typed loader for native/nflb_native.c. The addon owns file descriptors and syscalls
// only; expected failures come back as negative errno values (never thrown), so hot
// loops compare numbers instead of catching exceptions.
import { createRequire } from "node:module";

/** Opaque handle returned by pollStart; keep it referenced (dropping it stops polling). */
export type PollHandle = { readonly __nflbPollHandle: unique symbol };

export interface ErrnoConstants {
  readonly EAGAIN: number;
  readonly EWOULDBLOCK: number;
  readonly EINTR: number;
  readonly ENOBUFS: number;
  readonly EPERM: number;
  readonly EBUSY: number;
  readonly ENOENT: number;
  readonly ENODEV: number;
  readonly EINVAL: number;
  readonly EEXIST: number;
  readonly EMSGSIZE: number;
  readonly EBADF: number;
  readonly EOPNOTSUPP: number;
  readonly ENOTSUP: number;
  readonly ETIMEDOUT: number;
  readonly EPROTONOSUPPORT: number;
  readonly ENOMEM: number;
}

export interface NativeAddon {
  /** NETLINK_NETFILTER socket, non-blocking, bound (kernel-assigned port id),
   * SO_RCVBUFFORCE (falls back to SO_RCVBUF), NETLINK_NO_ENOBUFS. fd or -errno. */
  nlOpen(rcvbufBytes: number): number;
  /** The socket's netlink port id (what /proc/net/netfilter/nfnetlink_queue shows), or -errno. */
  nlPortId(fd: number): number;
  /**
   * Non-blocking recvmmsg of up to maxSlots (<= 1024) datagrams; datagram i lands at
   * buf[i * slotSize]. lens[i] = bytes received, or minus the bytes kept when the
   * datagram was truncated (MSG_TRUNC). Returns the count, 0 when nothing is queued, or -errno.
   */
  nlRecvBatch(
    fd: number,
    buf: Uint8Array,
    slotSize: number,
    maxSlots: number,
    lens: Int32Array,
  ): number;
  /** One sendto to the kernel of buf[0, len) (any number of netlink messages). Bytes or -errno. */
  nlSend(fd: number, buf: Uint8Array, len: number): number;
  /** Waits up to timeoutMs for one datagram. Its length, 0 on timeout, or -errno. */
  nlRecvOne(fd: number, buf: Uint8Array, timeoutMs: number): number;
  /** Calls callback(status) on the calling thread's loop whenever fd is readable. */
  pollStart(fd: number, callback: (status: number) => void): PollHandle;
  /** Stops and closes the poll handle so the loop can exit. Idempotent. */
  pollStop(handle: PollHandle): void;
  fdClose(fd: number): number;
  /** write(2): bytes or -errno. */
  fdWrite(fd: number, buf: Uint8Array, len: number): number;
  /** MAP_SHARED read/write mapping of an open file; munmapped when the buffer is collected.
   * Throws (err.code = errno name) when mmap fails. */
  mmapShared(fd: number, size: number): ArrayBuffer;
  /** flock(2), blocking unless LOCK_NB is or-ed in. 0 or -errno. */
  flock(fd: number, op: number): number;
  /**
   * This network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14+), decimal: unlike the
   * nsfs inode it is never reused by a later namespace. Throws where the kernel lacks it.
   */
  netnsCookie(): string;
  /** Opens /dev/net/tun as IFF_TUN|IFF_NO_PI. Throws (err.code = errno name) on failure. */
  tunOpen(name: string): { fd: number; name: string };
  /** Message text for an errno; accepts errno or -errno. */
  strerror(errno: number): string;
  readonly errno: ErrnoConstants;
}

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

// dist/src/native/addon.js -> <repo>/native/build/Release/nflb_native.node
const ADDON_PATH = "../../../native/build/Release/nflb_native.node";

let cached: NativeAddon | undefined;

/** Loads the addon once per thread (it is context-aware, so worker threads load it too). */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  try {
    cached = require(ADDON_PATH) as NativeAddon;
  } catch (err) {
    if ((err as { code?: string }).code === "MODULE_NOT_FOUND") {
      throw new Error("native addon not built: run npm run build", { cause: err });
    }
    throw err;
  }
  return cached;
}
