#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the demo: a namespace topology with a VIP, three
# targets and real traffic balanced across them. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces)" >&2
  exit 1
fi
scripts/setup.sh
exec node dist/scripts/demo.js "$@"
