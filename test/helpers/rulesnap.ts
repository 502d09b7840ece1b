// Everything `nflb setup` may touch in a network namespace, as text, in one shell run:
// the whole nft rule set, the iptables-nft view of it, ip rules and routes of every
// table, network devices, rp_filter settings, and nflb's own record directory.
import { execFileSync } from "node:child_process";
import type { Netns } from "./netns.js";

const SEP = "-----";

const SCRIPT = [
  // stderr: nft warns that iptables-nft manages some tables.
  "nft list ruleset 2>/dev/null",
  "iptables-nft-save | grep -v '^#'",
  "ip6tables-nft-save | grep -v '^#'",
  "ip -4 rule",
  "ip -6 rule",
  "ip -4 route show table all",
  "ip -6 route show table all",
  "ip -d link show",
  "sysctl -a --pattern '^net\\.ipv4\\.conf\\..*\\.rp_filter$' 2>/dev/null",
  // The record directory of this namespace (absent when no setup is recorded).
  'ls -A "$(printenv NFLB_RUN_DIR || echo /run/nflb)/netns-$(stat -L -c %i /proc/self/ns/net)" 2>/dev/null || true',
].join(`; echo ${SEP}; `);

/** The snapshot of `ns`, taken from outside. */
export function ruleSnapshot(ns: Netns): string {
  return ns.exec("sh", ["-c", SCRIPT]);
}

/** The snapshot of the namespace this process runs in. */
export function localRuleSnapshot(): string {
  return execFileSync("sh", ["-c", SCRIPT], { encoding: "utf8" });
}

/**
 * Ignores what a rollback or a re-setup may change without changing the rules: counters
 * (traffic such as IPv6 neighbour discovery passes meanwhile), the order of tables (a
 * replaced nft table moves to the end) and of lines (a re-added ip rule goes after others
 * of its preference), interface indexes of re-created devices.
 */
export function normalizedSnapshot(text: string): string {
  const [nft, ...rest] = text
    .replace(/packets \d+ bytes \d+/g, "packets - bytes -")
    .replace(/\[\d+:\d+\]/g, "[-:-]")
    .replace(/^\d+: (?=\S+: <)/gm, "N: ")
    .split(`\n${SEP}\n`);
  const tables = nft
    .split(/^(?=table )/m)
    .map((t) => t.trim())
    .sort();
  const lines = rest.map((section) => section.split("\n").sort().join("\n"));
  return [tables.join("\n"), ...lines].join(`\n${SEP}\n`);
}
