#!/usr/bin/env bash
# The A/A check of asv's comparisons: `asv continuous` on two commits that run the same dnorm/, RUNS times at
# FACTOR; every benchmark it flags is a false alarm. Prints the count per run and exits 1 if any run flagged one.
#   bash asv_benchmarks/aa-check.sh [A] [B]      (default HEAD~1 HEAD; RUNS=3 FACTOR=1.3 BENCH=ratios)
set -euo pipefail
cd "$(dirname "$0")"
a=${1:-HEAD~1}
b=${2:-HEAD}
runs=${RUNS:-3}
factor=${FACTOR:-1.3}
bench=${BENCH:-ratios}
if ! git diff --quiet "$a" "$b" -- ../dnorm; then
    echo "aa-check.sh: $a and $b differ under dnorm/: that is no A/A comparison" >&2
    exit 2
fi
asv machine --yes >/dev/null
total=0
for run in $(seq "$runs"); do
    log=$(mktemp)
    asv continuous --factor "$factor" --bench "$bench" "$a" "$b" >"$log" 2>&1 || true
    # asv lists a changed benchmark as a table row starting with + (slower) or - (faster)
    flagged=$(grep -cE '^[[:space:]]*[+-][[:space:]]+[0-9]' "$log" || true)
    echo "A/A run $run of $runs, --factor $factor, --bench $bench: $flagged flagged"
    grep -E '^[[:space:]]*[+-][[:space:]]+[0-9]' "$log" || true
    total=$((total + flagged))
    rm -f "$log"
done
echo "flagged in all: $total"
[ "$total" -eq 0 ]
