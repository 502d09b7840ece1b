#!/usr/bin/env bash
# Installs everything nflb needs on a fresh Debian 12 machine and builds it.
# Safe to run again: it only installs what is missing and rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }

# command -> Debian package (bird2: BGP announcement; chromium: the dashboard's browser tests)
declare -A packages=(
  [ip]=iproute2 [nft]=nftables [iptables-nft]=iptables [conntrack]=conntrack
  [tcpdump]=tcpdump [make]=make [g++]=g++ [python3]=python3 [sysctl]=procps
  [ping]=iputils-ping [setpriv]=util-linux [bird]=bird2 [chromium]=chromium
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}: run as root to install them" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup: Node.js >= 20 is required (node not found)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "setup: Node.js >= 20 is required, found $(node --version)" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "building the addon and the TypeScript"
npm run --silent build >/dev/null
log "ready"
