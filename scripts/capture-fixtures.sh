#!/usr/bin/env bash
# Re-creates the pcap fixtures in test/fixtures/ from real traffic between three network
# namespaces created (and deleted) here:
#
#   A (client) a0 ---- r0 R (router) r1 ---- b0 B (server)
#   10.1.0.1/24, fd01::1/64      10.2.0.254/24, fd02::fe/64      10.2.0.1/24, fd02::1/64
#                10.1.0.254/24, fd01::fe/64    MTU 1280 on the R-B link
#
# Nothing touches the root namespace; all traffic stays between these namespaces; every
# capture is bounded in packets (-c) and seconds (timeout). Captures are taken on A's a0
# (Ethernet link type) with -s 0 unless said otherwise. Needs root, iproute2, tcpdump,
# socat, ping (iputils-ping), node; python3 for the extension-header fixture.
# Usage: sudo scripts/capture-fixtures.sh   (see test/fixtures/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=test/fixtures
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "capture-fixtures: needs root" >&2; exit 1; }
for tool in ip tcpdump socat ping node timeout; do
  command -v "$tool" >/dev/null || { echo "capture-fixtures: missing $tool" >&2; exit 1; }
done

TAG="nflbcap$$"
A="$TAG-a"
R="$TAG-r"
B="$TAG-b"
WORK=$(mktemp -d)
BG_PIDS=()
CAP_PID=""

cleanup() {
  for pid in "${BG_PIDS[@]}" $CAP_PID; do kill "$pid" 2>/dev/null || true; done
  for ns in "$A" "$R" "$B"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

inA() { ip netns exec "$A" "$@"; }
inR() { ip netns exec "$R" "$@"; }

# ---- topology ----
for ns in "$A" "$R" "$B"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$A" link add a0 type veth peer name r0 netns "$R"
ip -n "$B" link add b0 type veth peer name r1 netns "$R"
ip -n "$R" link set r1 mtu 1280
ip -n "$B" link set b0 mtu 1280
ip -n "$A" addr add 10.1.0.1/24 dev a0
ip -n "$A" addr add fd01::1/64 dev a0 nodad
ip -n "$R" addr add 10.1.0.254/24 dev r0
ip -n "$R" addr add fd01::fe/64 dev r0 nodad
ip -n "$R" addr add 10.2.0.254/24 dev r1
ip -n "$R" addr add fd02::fe/64 dev r1 nodad
ip -n "$B" addr add 10.2.0.1/24 dev b0
ip -n "$B" addr add fd02::1/64 dev b0 nodad
ip -n "$A" link set a0 up
ip -n "$R" link set r0 up
ip -n "$R" link set r1 up
ip -n "$B" link set b0 up
ip -n "$A" route add default via 10.1.0.254
ip -n "$A" -6 route add default via fd01::fe
ip -n "$B" route add default via 10.2.0.254
ip -n "$B" -6 route add default via fd02::fe
inR sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
# No ICMP rate limiting: several errors go to the same host within a second.
for ns in "$R" "$B"; do
  ip netns exec "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
done

# Static neighbours: no ARP/ND in the captures and no first-packet delay on fresh links.
mac() { ip -n "$1" -j link show "$2" | sed -n 's/.*"address":"\([0-9a-f:]*\)".*/\1/p'; }
neigh() { # ns ifname addr peer-ns peer-ifname
  ip -n "$1" neigh replace "$3" lladdr "$(mac "$4" "$5")" dev "$2" nud permanent
}
neigh "$A" a0 10.1.0.254 "$R" r0
neigh "$A" a0 fd01::fe "$R" r0
neigh "$R" r0 10.1.0.1 "$A" a0
neigh "$R" r0 fd01::1 "$A" a0
neigh "$R" r1 10.2.0.1 "$B" b0
neigh "$R" r1 fd02::1 "$B" b0
neigh "$B" b0 10.2.0.254 "$R" r1
neigh "$B" b0 fd02::fe "$R" r1

# ---- traffic helpers ----
cat >"$WORK/traffic.cjs" <<'EOF'
// echo PORT: UDP echo server (v4 and v6) for datagrams up to 1000 bytes, 120 s at most.
// send FAMILY SRC SPORT DST DPORT TTL SIZE...: one socket, one datagram per SIZE, 150 ms
//   apart (TTL 0 = default), then 300 ms for replies.
// join: joins an IPv6 multicast group (the kernel sends MLDv2 reports with hop-by-hop).
const dgram = require("node:dgram");
const [cmd, ...a] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
if (cmd === "echo") {
  for (const type of ["udp4", "udp6"]) {
    const s = dgram.createSocket({ type, ipv6Only: type === "udp6" });
    s.on("message", (m, r) => {
      if (m.length <= 1000) s.send(m, r.port, r.address);
    });
    s.bind(Number(a[0]));
  }
  setTimeout(() => process.exit(0), 120_000);
} else if (cmd === "send") {
  const [family, src, sport, dst, dport, ttl, ...sizes] = a;
  const s = dgram.createSocket(family === "6" ? "udp6" : "udp4");
  s.on("error", () => {});
  s.bind({ address: src, port: Number(sport) }, async () => {
    if (ttl !== "0") s.setTTL(Number(ttl));
    for (const n of sizes) {
      await new Promise((r) => s.send(Buffer.alloc(Number(n), 0x61), Number(dport), dst, r));
      await sleep(150);
    }
    await sleep(300);
    s.close();
  });
} else if (cmd === "join") {
  const s = dgram.createSocket({ type: "udp6", reuseAddr: true });
  s.bind(5400, () => {
    s.addMembership("ff15::1234");
    setTimeout(() => s.close(), 500);
  });
}
EOF
traffic() { node "$WORK/traffic.cjs" "$@"; }

# cap_start NS IFACE FILE COUNT SNAPLEN FILTER: tcpdump in the background until it listens.
cap_start() {
  local ns=$1 ifc=$2 file=$3 count=$4 snap=$5 filter=$6
  rm -f "$OUT/$file"
  : >"$WORK/tcpdump.err"
  ip netns exec "$ns" timeout 20 tcpdump -i "$ifc" -n -U --immediate-mode -Z root \
    -s "$snap" -c "$count" -w "$OUT/$file" "$filter" 2>"$WORK/tcpdump.err" &
  CAP_PID=$!
  for _ in $(seq 50); do
    grep -q "listening on" "$WORK/tcpdump.err" && return 0
    sleep 0.1
  done
  echo "tcpdump did not start: $(cat "$WORK/tcpdump.err")" >&2
  return 1
}
# cap_stop FILE: lets the last packets arrive, stops tcpdump, prints the summary.
cap_stop() {
  sleep 0.5
  kill "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  CAP_PID=""
  echo "== $1: $(tcpdump -nr "$OUT/$1" 2>/dev/null | wc -l) packets, $(stat -c %s "$OUT/$1") bytes"
  tcpdump -nr "$OUT/$1" 2>/dev/null | sed 's/^/   /'
}

# Background jobs run `ip netns exec` directly (not through a shell function), so $! is
# the server's own pid and cleanup can end it.
ip netns exec "$B" node "$WORK/traffic.cjs" echo 5300 &
BG_PIDS+=($!)
sleep 0.3

# ---- TCP: handshake, a line of data, teardown ----
for fam in 4 6; do
  if [ "$fam" = 4 ]; then dst=10.2.0.1 src=10.1.0.1; else dst="[fd02::1]" src="[fd01::1]"; fi
  ip netns exec "$B" timeout 10 socat -u "TCP$fam-LISTEN:8080,reuseaddr" /dev/null &
  BG_PIDS+=($!)
  sleep 0.3
  cap_start "$A" a0 "tcp-v$fam.pcap" 20 0 "tcp port 8080"
  echo "hello nflb" | inA timeout 5 socat -u - "TCP$fam:$dst:8080,bind=$src:4010$fam"
  cap_stop "tcp-v$fam.pcap"
done

# ---- UDP: two datagrams and their echoes ----
cap_start "$A" a0 udp-v4.pcap 10 0 "udp port 5300"
inA timeout 5 node "$WORK/traffic.cjs" send 4 10.1.0.1 40002 10.2.0.1 5300 0 32 48
cap_stop udp-v4.pcap
cap_start "$A" a0 udp-v6.pcap 10 0 "udp port 5300"
inA timeout 5 node "$WORK/traffic.cjs" send 6 fd01::1 40012 fd02::1 5300 0 32 48
cap_stop udp-v6.pcap

# ---- Fragmentation needed / packet too big: a small datagram (echoed), then one of 1400
# bytes that cannot cross the 1280-byte link (IPv4: DF is set by path MTU discovery).
cap_start "$A" a0 icmp-fragneeded-v4.pcap 10 0 "udp port 5300 or icmp"
inA timeout 5 node "$WORK/traffic.cjs" send 4 10.1.0.1 40003 10.2.0.1 5300 0 32 1400
cap_stop icmp-fragneeded-v4.pcap
cap_start "$A" a0 icmp6-ptb.pcap 10 0 "udp port 5300 or (icmp6 and ip6[40] == 2)"
inA timeout 5 node "$WORK/traffic.cjs" send 6 fd01::1 40013 fd02::1 5300 0 32 1400
cap_stop icmp6-ptb.pcap

# ---- Fragmented UDP: one 4000-byte datagram (not echoed) ----
cap_start "$A" a0 frag-udp-v4.pcap 10 0 "ip and src 10.1.0.1 and dst 10.2.0.1"
inA timeout 5 node "$WORK/traffic.cjs" send 4 10.1.0.1 40004 10.2.0.1 5300 0 4000
cap_stop frag-udp-v4.pcap
cap_start "$A" a0 frag-udp-v6.pcap 10 0 "ip6 and src fd01::1 and dst fd02::1"
inA timeout 5 node "$WORK/traffic.cjs" send 6 fd01::1 40014 fd02::1 5300 0 4000
cap_stop frag-udp-v6.pcap

# ---- ICMP echo ----
cap_start "$A" a0 icmp-echo-v4.pcap 4 0 "icmp"
inA timeout 5 ping -n -c 2 -i 0.2 10.2.0.1 >/dev/null
cap_stop icmp-echo-v4.pcap
cap_start "$A" a0 icmp6-echo.pcap 4 0 "icmp6 and (ip6[40] == 128 or ip6[40] == 129)"
inA timeout 5 ping -6 -n -c 2 -i 0.2 fd02::1 >/dev/null
cap_stop icmp6-echo.pcap

# ---- Port unreachable (closed port on B) and time exceeded (TTL/hop limit 1 at R) ----
cap_start "$A" a0 icmp-errors-v4.pcap 10 0 "udp or icmp"
inA timeout 5 node "$WORK/traffic.cjs" send 4 10.1.0.1 40005 10.2.0.1 5399 0 20
inA timeout 5 node "$WORK/traffic.cjs" send 4 10.1.0.1 40006 10.2.0.1 5300 1 20
cap_stop icmp-errors-v4.pcap
cap_start "$A" a0 icmp6-errors.pcap 10 0 "udp or (icmp6 and (ip6[40] == 1 or ip6[40] == 3))"
inA timeout 5 node "$WORK/traffic.cjs" send 6 fd01::1 40015 fd02::1 5399 0 20
inA timeout 5 node "$WORK/traffic.cjs" send 6 fd01::1 40016 fd02::1 5300 1 20
cap_stop icmp6-errors.pcap

# ---- IPv6 hop-by-hop: MLDv2 report (router alert option) sent on a multicast join ----
cap_start "$A" a0 ipv6-hbh-mld.pcap 2 0 "ip6 and ip6[6] == 0"
inA timeout 5 node "$WORK/traffic.cjs" join
cap_stop ipv6-hbh-mld.pcap

# ---- IPv6 routing header: SRv6 inline mode inserts a segment routing header (type 4) ----
inR sysctl -qw net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.r0.seg6_enabled=1
inA ip -6 route add fd02::1/128 encap seg6 mode inline segs fd01::fe via fd01::fe dev a0
cap_start "$A" a0 ipv6-srh.pcap 2 0 "ip6 and ip6[6] == 43"
inA timeout 5 node "$WORK/traffic.cjs" send 6 fd01::1 40017 fd02::1 5300 0 24
cap_stop ipv6-srh.pcap
inA ip -6 route del fd02::1/128

# ---- IPv6 hop-by-hop + destination options (+ fragment): sticky socket options, which
# only python exposes here. A small datagram (HBH, DSTOPTS, UDP) and a 3000-byte one
# (HBH, DSTOPTS, fragment, UDP in the first fragment: without a routing header the kernel
# keeps destination options in the unfragmentable part). ----
if command -v python3 >/dev/null; then
  cap_start "$A" a0 ipv6-exthdr-frag.pcap 6 0 "ip6 and src fd01::1 and dst fd02::1"
  inA timeout 5 python3 - <<'EOF'
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fd01::1", 40018))
# IPV6_HOPOPTS (54) / IPV6_DSTOPTS (59): 8-byte headers carrying option 0x1e (an RFC 4727
# experiment type whose top bits say "skip if unknown") with 4 bytes of data.
s.setsockopt(socket.IPPROTO_IPV6, 54, bytes([0, 0, 0x1E, 4, 0xDE, 0xAD, 0xBE, 0xEF]))
s.setsockopt(socket.IPPROTO_IPV6, 59, bytes([0, 0, 0x1E, 4, 0xCA, 0xFE, 0xF0, 0x0D]))
s.sendto(b"x" * 24, ("fd02::1", 5300))
time.sleep(0.15)
s.sendto(b"y" * 3000, ("fd02::1", 5300))
time.sleep(0.2)
EOF
  cap_stop ipv6-exthdr-frag.pcap
else
  echo "python3 missing: ipv6-exthdr-frag.pcap not re-created" >&2
fi

# ---- GSO super-packets: bulk TCP to R over the 1500-byte link; the sender's veth hands
# the stack's 64 KiB segments to tcpdump before segmentation, total length > MTU.
# Only the first 128 bytes are kept, as with an NFQUEUE copy range. ----
for fam in 4 6; do
  if [ "$fam" = 4 ]; then src=10.1.0.1 dst=10.1.0.254 filter="tcp and greater 3000"; else
    src="[fd01::1]" dst="[fd01::fe]" filter="ip6 and tcp and greater 3000"; fi
  ip netns exec "$R" timeout 10 socat -u "TCP$fam-LISTEN:8081,reuseaddr" /dev/null &
  BG_PIDS+=($!)
  sleep 0.3
  cap_start "$A" a0 "tcp-gso-v$fam.pcap" 3 128 "$filter"
  head -c 2000000 /dev/zero | inA timeout 5 socat -u - "TCP$fam:$dst:8081,bind=$src:4020$fam" || true
  cap_stop "tcp-gso-v$fam.pcap"
done

echo "fixtures written to $OUT"
