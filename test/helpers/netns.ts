// Network namespaces for end-to-end tests. Every namespace gets a name unique to this
// process and is deleted when the topology is destroyed or the process exits, even after
// a failure. Interfaces are created inside the namespaces (never in the root namespace).
import { execFileSync, type SpawnOptions, spawn } from "node:child_process";

let counter = 0;
const live = new Set<string>();

function removeAll(): void {
  for (const name of live) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
  live.clear();
}
process.on("exit", removeAll);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    removeAll();
    process.exit(130);
  });
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Runs a command, returns stdout; throws with stderr in the message on failure. */
export function run(cmd: string, args: readonly string[], input?: string): string {
  try {
    return execFileSync(cmd, args, {
      encoding: "utf8",
      input,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 30_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`);
  }
}

export class Netns {
  private constructor(readonly name: string) {}

  /** Creates a namespace named `nflbt<pid>-<n>-<role>` with loopback up. */
  static create(role: string): Netns {
    counter += 1;
    const name = `nflbt${process.pid}-${counter}-${role}`;
    run("ip", ["netns", "add", name]);
    live.add(name);
    const ns = new Netns(name);
    ns.exec("ip", ["link", "set", "lo", "up"]);
    return ns;
  }

  exec(cmd: string, args: readonly string[], input?: string): string {
    return run("ip", ["netns", "exec", this.name, cmd, ...args], input);
  }

  /** Like exec, but returns the exit status instead of throwing. */
  tryExec(
    cmd: string,
    args: readonly string[],
  ): { status: number; stdout: string; stderr: string } {
    try {
      const stdout = execFileSync("ip", ["netns", "exec", this.name, cmd, ...args], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 30_000,
      });
      return { status: 0, stdout, stderr: "" };
    } catch (err) {
      const e = err as { status?: number; stdout?: string; stderr?: string };
      return { status: e.status ?? 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  }

  spawn(cmd: string, args: readonly string[], options: SpawnOptions = {}) {
    return spawn("ip", ["netns", "exec", this.name, cmd, ...args], options);
  }

  /** Sets a sysctl inside this namespace (e.g. "net.ipv4.ip_forward", "1"). */
  sysctl(key: string, value: string): void {
    this.exec("sysctl", ["-qw", `${key}=${value}`]);
  }

  destroy(): void {
    if (!live.has(this.name)) return;
    live.delete(this.name);
    try {
      run("ip", ["netns", "del", this.name]);
    } catch {
      // already gone
    }
  }
}

/**
 * Connects two namespaces with a veth pair, created inside `a` with its peer moved to `b`
 * in the same command, so nothing ever appears in the root namespace.
 * Addresses are CIDR strings ("10.0.0.1/24", "fd00::1/64").
 */
export function link(
  a: Netns,
  aIf: string,
  aAddrs: readonly string[],
  b: Netns,
  bIf: string,
  bAddrs: readonly string[],
  mtu?: number,
): void {
  a.exec("ip", ["link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.name]);
  for (const [ns, ifname, addrs] of [
    [a, aIf, aAddrs],
    [b, bIf, bAddrs],
  ] as const) {
    if (mtu) ns.exec("ip", ["link", "set", ifname, "mtu", String(mtu)]);
    for (const addr of addrs) {
      // nodad: IPv6 addresses are usable at once instead of after duplicate detection.
      const extra = addr.includes(":") ? ["nodad"] : [];
      ns.exec("ip", ["addr", "add", addr, "dev", ifname, ...extra]);
    }
    ns.exec("ip", ["link", "set", ifname, "up"]);
  }
}

/** A set of namespaces destroyed together. */
export class Topology {
  readonly namespaces: Netns[] = [];

  add(role: string): Netns {
    const ns = Netns.create(role);
    this.namespaces.push(ns);
    return ns;
  }

  destroy(): void {
    for (const ns of this.namespaces.splice(0)) ns.destroy();
  }
}
