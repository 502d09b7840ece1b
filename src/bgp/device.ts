// The device that carries the announcements: a non-persistent TUN device that exists
// exactly as long as this process holds its file descriptor. BIRD's VIP routes point at
// it (`route VIP via "nflb_bgp"`) and BIRD drops a route whose device is down or gone:
// when nflb exits or is killed (-9 included), the kernel closes the descriptor, deletes
// the device, tells BIRD (a netlink link event), and BIRD withdraws every VIP at once.
//
// Holding the device also makes it exclusive: a second process cannot open it (EBUSY),
// so it cannot disturb the announcements of the first. It is held down until BIRD
// confirmed a configuration with only wanted VIPs, and set down to withdraw everything.
// I/O.
import { execFileSync } from "node:child_process";
import { loadAddon } from "../native/addon.js";
import { findTool } from "../netfilter/sys.js";
import { BgpError } from "./types.js";

export class AnnounceDevice {
  private fd = -1;
  private isUp = false;

  constructor(readonly name: string) {}

  /** This process holds the device. */
  get held(): boolean {
    return this.fd >= 0;
  }

  /** Held and up: BIRD may announce the VIP routes pointing at it. */
  get up(): boolean {
    return this.isUp;
  }

  /** Creates the device (down); idempotent. Throws BgpError("device"). */
  acquire(): void {
    if (this.fd >= 0) return;
    let t: { fd: number; name: string };
    try {
      t = loadAddon().tunOpen(this.name);
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why =
        code === "EBUSY"
          ? "another process holds it (is another nflb announcing here?)"
          : code === "EPERM" || code === "EACCES"
            ? "permission denied (needs CAP_NET_ADMIN)"
            : code === "ENOENT"
              ? "/dev/net/tun is missing (CONFIG_TUN; modprobe tun)"
              : code === "EINVAL"
                ? "a device of that name exists and is not a TUN device"
                : (err as Error).message;
      throw new BgpError("device", `cannot create announcement device ${this.name}: ${why}`);
    }
    this.fd = t.fd;
    this.isUp = false;
    try {
      // A device left up by an earlier holder (a persistent one) starts down here too.
      this.ip("link", "set", "dev", this.name, "down");
      this.ip(
        "link",
        "set",
        "dev",
        this.name,
        "alias",
        "nflb: VIPs are announced while this is up",
      );
      try {
        // No IPv6 link-local address: nothing to send into a device nobody reads.
        this.ip("link", "set", "dev", this.name, "addrgenmode", "none");
      } catch {
        // an older kernel or iproute2: harmless
      }
    } catch (err) {
      this.release();
      throw err;
    }
  }

  /** Brings the held device up: BIRD announces the VIPs its configuration lists. */
  setUp(): void {
    if (this.fd < 0 || this.isUp) return;
    this.ip("link", "set", "dev", this.name, "up");
    this.isUp = true;
  }

  /** Sets it down: BIRD withdraws every VIP, the device stays ours. */
  setDown(): void {
    if (this.fd < 0 || !this.isUp) return;
    this.isUp = false;
    this.ip("link", "set", "dev", this.name, "down");
  }

  /** Closes the descriptor: the kernel deletes the device, BIRD withdraws. Idempotent. */
  release(): void {
    if (this.fd < 0) return;
    loadAddon().fdClose(this.fd);
    this.fd = -1;
    this.isUp = false;
  }

  private ip(...args: string[]): void {
    const ip = findTool("ip");
    if (!ip) throw new BgpError("device", "ip not found (install iproute2)");
    try {
      execFileSync(ip, args, { stdio: ["ignore", "ignore", "pipe"], timeout: 10_000 });
    } catch (err) {
      const e = err as { stderr?: Buffer | string; message: string };
      throw new BgpError(
        "device",
        `ip ${args.join(" ")}: ${e.stderr?.toString().trim() || e.message}`,
      );
    }
  }
}
