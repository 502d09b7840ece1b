#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, unit tests, then the
# end-to-end tests on the real kernel (network namespaces; they need root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
npx biome check .
if [ "$(id -u)" -ne 0 ] && [ "${CI:-}" != "true" ]; then
  echo "test: not root: end-to-end tests will be skipped" >&2
fi
# Unit tests may run side by side; the kernel tests one file at a time (timing-sensitive).
node --test dist/test/unit/
node --test --test-concurrency=1 dist/test/e2e/
