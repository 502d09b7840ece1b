// Every file nflb keeps at run time, in one place.
//
// State dir (/dev/shm/nflb, NFLB_STATE_DIR moves it): what the CLI and the daemons share
// on this host, whatever the network namespace: one state file per load balancer, the
// daemons' counters, the flow files. Memory-backed: it does not survive a reboot.
//
// Run dir (/run/nflb, NFLB_RUN_DIR moves it): one directory per network namespace,
// netns-<inode of /proc/self/ns/net>, for what belongs to one namespace's rules and
// daemons: setup records, the netns lock, control sockets, the dashboard token, the BIRD
// include file. A path is reachable from every namespace, but a daemon serves the packets
// of its own one, and two namespaces may each run a daemon of the same name.
import { statSync } from "node:fs";
import { join } from "node:path";
import { parseLbName } from "./domain/names.js";

export const DEFAULT_STATE_DIR = "/dev/shm/nflb";
export const DEFAULT_RUN_DIR = "/run/nflb";
/** The service's configuration file (`nflb run -c`, `nflb apply -f`) when none is named. */
export const DEFAULT_CONFIG_FILE = "/etc/nflb/nflb.yaml";

export function stateDir(): string {
  return process.env.NFLB_STATE_DIR || DEFAULT_STATE_DIR;
}

export function runDir(): string {
  return process.env.NFLB_RUN_DIR || DEFAULT_RUN_DIR;
}

/** The network namespace this process is in: inode and device of its nsfs file. */
export function netnsIdentity(): { inode: number; dev: number } {
  const st = statSync("/proc/self/ns/net");
  return { inode: st.ino, dev: st.dev };
}

/** <run dir>/netns-<inode>: this network namespace's directory. */
export function netnsDir(): string {
  return join(runDir(), `netns-${netnsIdentity().inode}`);
}

// ---- state dir ----

/** A load balancer's shared state file: <state dir>/<name>. */
export function statePath(name: string): string {
  return join(stateDir(), parseLbName(name));
}

/** The counters of a load balancer's daemon queue: <state dir>/<name>.q<queue>.stats. */
export function countersPath(name: string, queue: number): string {
  return join(stateDir(), `${parseLbName(name)}.q${queue}.stats`);
}

/** The queue of a counters file name of this load balancer, or undefined if it is not one. */
export function countersFileQueue(name: string, file: string): number | undefined {
  const m = /^(.+)\.q(\d{1,5})\.stats$/.exec(file);
  return m !== null && m[1] === name ? Number(m[2]) : undefined;
}

export type FlowFileSet = "flows" | "trace-flows";

/** The flows (or trace flows) of every daemon on this host: <state dir>/<set>.json. */
export function flowsPath(set: FlowFileSet): string {
  return join(stateDir(), `${set}.json`);
}

/** Serialises changes of a flow file. */
export function flowsLockPath(set: FlowFileSet): string {
  return join(stateDir(), `${set}.lock`);
}

// ---- run dir, per network namespace ----

/** What a setup applied, so that teardown works without the arguments. */
export function setupRecordPath(name: string): string {
  return join(netnsDir(), `${parseLbName(name)}.setup.json`);
}

/** The setup records' file-name suffix (listing them). */
export const SETUP_RECORD_SUFFIX = ".setup.json";

/** Which built-in iptables chains and tables nflb created in this namespace. */
export function builtinOwnershipPath(): string {
  return join(netnsDir(), "iptables-builtin.json");
}

/** Serialises setups and teardowns of this namespace. */
export function netnsLockPath(): string {
  return join(netnsDir(), ".lock");
}

/** A daemon's control socket (trace, status): root-only, removed at exit. */
export function controlSocketPath(name: string): string {
  return join(netnsDir(), `${parseLbName(name)}.sock`);
}

/**
 * The token the dashboard and the HTTP API ask for off loopback (mode 0600). It must
 * outlive restarts and reboots (it is in bookmarks and Prometheus configs), so it lives
 * under /var/lib; NFLB_HTTP_TOKEN_FILE moves it.
 */
export function dashboardTokenPath(): string {
  return process.env.NFLB_HTTP_TOKEN_FILE || "/var/lib/nflb/http-token";
}

/** The address of this namespace's running HTTP endpoint, for `nflb dashboard-url`. */
export function endpointRecordPath(): string {
  return join(netnsDir(), "http.json");
}

/** The file nflb writes for BIRD to include (VIP announcements). */
export function birdIncludePath(): string {
  return join(netnsDir(), "bird-nflb.conf");
}
