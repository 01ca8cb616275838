#!/usr/bin/env bash
# The test command: the same for `make test`, the README and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Kubernetes packaging first: it also installs the pinned helm and
# kubectl that tests/manifests.rs renders the chart and overlays with.
scripts/check-deploy.sh
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --locked --no-fail-fast
else
    echo "test: cargo-nextest not found; using cargo test" >&2
    exec cargo test --workspace --locked --no-fail-fast
fi
