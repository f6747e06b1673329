#!/usr/bin/env bash
# One quick asv run of every benchmark, at the smallest sizes, on the current environment (.ci/run calls this).
# Nothing is saved. Fails when a benchmark fails: asv itself exits 0 then, so its output is checked too.
set -euo pipefail
cd "$(dirname "$0")"
export DNORM_BENCH_QUICK=1
asv machine --yes >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
asv run --python=same --quick --show-stderr "$@" 2>&1 | tee "$log"
if grep -Eq '\bfailed\b|Traceback' "$log"; then
    echo "run-quick.sh: a benchmark failed (see above)" >&2
    exit 1
fi
