// Per-target and queue counters of a setup, read from its rules (for `nflb stats`).
import { iptSave, nftJson } from "./live.js";
import { readRecord } from "./record.js";
import {
  balanceChainName,
  fragmentComment,
  icmpComment,
  peerCounter,
  queueChainName,
} from "./render.js";
import { type RuleCounter, type SetupCounters, SetupError } from "./types.js";

interface Count {
  packets: number;
  bytes: number;
}

/** "[p:b] -A CHAIN ..." lines of iptables-nft-save -c. */
function iptCounters(raw: string): { chain: string; rule: string; count: Count }[] {
  const out: { chain: string; rule: string; count: Count }[] = [];
  for (const line of raw.split("\n")) {
    const m = /^\[(\d+):(\d+)\] -A (\S+) (.*)$/.exec(line);
    if (m)
      out.push({ chain: m[3], rule: m[4], count: { packets: Number(m[1]), bytes: Number(m[2]) } });
  }
  return out;
}

/**
 * Sync. Counters of the setup recorded in this network namespace; throws SetupError if
 * there is none. packets/bytes per target are client -> target traffic; `connections`
 * counts the new connections DNATed to it (nat, statistic).
 */
export function readCounters(name: string): SetupCounters {
  const rec = readRecord(name);
  if (!rec) throw new SetupError(`no setup "${name}" in this network namespace`);
  const plan = rec.plans[0];
  const [family, table] = plan.nftTable.split(" ");
  const objects = nftJson(["list", "counters", "table", family, table]);
  if (!objects) {
    throw new SetupError(
      `cannot read the counters of setup "${name}": nft table ${plan.nftTable} is missing (run setup again) or this process lacks CAP_NET_ADMIN`,
    );
  }
  const named = new Map<string, Count>();
  for (const o of objects) {
    if (o.counter) {
      named.set(String(o.counter.name), {
        packets: Number(o.counter.packets),
        bytes: Number(o.counter.bytes),
      });
    }
  }

  const queued: Count = { packets: 0, bytes: 0 };
  const fragments: Count = { packets: 0, bytes: 0 };
  const icmp: Count = { packets: 0, bytes: 0 };
  let icmpRules = false;
  const connections = new Map<number, number>();
  const bin = plan.iptables.binary;
  if (plan.mode === "statistic") {
    const lb = balanceChainName(plan.name);
    const re = new RegExp(`--comment "?nflb:${plan.name}:fwmark=(\\d+)"?`);
    for (const r of iptCounters(iptSave(bin, "nat", true).raw)) {
      const m = r.chain === lb ? re.exec(r.rule) : null;
      if (m) connections.set(Number(m[1]), (connections.get(Number(m[1])) ?? 0) + r.count.packets);
    }
  } else {
    const q = queueChainName(plan.name);
    for (const r of iptCounters(iptSave(bin, "mangle", true).raw)) {
      if (r.chain === q && r.rule.includes("-j NFQUEUE")) {
        const sum = r.rule.includes(fragmentComment(plan.name)) ? fragments : queued;
        sum.packets += r.count.packets;
        sum.bytes += r.count.bytes;
        // Part of `queued` too: what the normal queues received, broken down.
        if (r.rule.includes(icmpComment(plan.name))) {
          icmpRules = true;
          icmp.packets += r.count.packets;
          icmp.bytes += r.count.bytes;
        }
      }
    }
    if (plan.mode === "nat") {
      for (const t of plan.targets) {
        connections.set(t.fwmark, named.get(`conn_${t.fwmark}`)?.packets ?? 0);
      }
    }
  }

  const targets: RuleCounter[] = plan.targets.map((t) => {
    const c = named.get(`pkts_${t.fwmark}`) ?? { packets: 0, bytes: 0 };
    const counter: RuleCounter = {
      fwmark: t.fwmark,
      address: t.address,
      packets: c.packets,
      bytes: c.bytes,
    };
    if (plan.mode !== "dsr") counter.connections = connections.get(t.fwmark) ?? 0;
    return counter;
  });
  const peers: RuleCounter[] | undefined = plan.tierPeers?.map((p) => {
    const c = named.get(peerCounter(p.fwmark)) ?? { packets: 0, bytes: 0 };
    return { fwmark: p.fwmark, address: p.address, packets: c.packets, bytes: c.bytes };
  });
  return {
    queued,
    ...(icmpRules ? { icmp } : {}),
    ...(plan.tun ? { fragments } : {}),
    targets,
    ...(peers ? { peers } : {}),
  };
}
