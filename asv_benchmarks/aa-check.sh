#!/usr/bin/env bash
# The A/A check of asv's comparisons: `asv continuous` on two commits that run the same dnorm/, RUNS times at
# FACTOR; every benchmark it lists as changed (+ slower, - faster, ! failed) is a false alarm. Prints each run's
# rows and count, keeps the logs, and exits 1 if any run flagged one.
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
logs=$(mktemp -d)
# asv runs `git fetch origin` in the repository it benchmarks: give it a clone whose origin is this checkout, so
# it reads here and writes nothing, and a configuration that points at the clone (environments and results stay
# in asv_benchmarks/, shared with ordinary runs)
here=$(pwd)
root=$(cd .. && pwd)
git clone --quiet "$root" "$logs/repo"
sed -e "s#\"repo\": \"..\"#\"repo\": \"$logs/repo\"#" -e "s#{conf_dir}/..#$root#g" \
    -e "s#\"\(benchmark_dir\|env_dir\|results_dir\|html_dir\)\": \"\([a-z]*\)\"#\"\1\": \"$here/\2\"#" \
    asv.conf.json >"$logs/asv.conf.json"
a=$(git rev-parse "$a")
b=$(git rev-parse "$b")
asv machine --yes >/dev/null
total=0
for run in $(seq "$runs"); do
    log=$logs/run-$run.log
    asv --config "$logs/asv.conf.json" continuous --factor "$factor" --bench "$bench" "$a" "$b" >"$log" 2>&1 || true
    # asv prints what changed as a GitHub table whose first column is the mark: | + | before | after | ratio | name |
    rows=$(grep -E '^\|[[:space:]]*[-+!][[:space:]]*\|' "$log" || true)
    flagged=$(printf '%s' "$rows" | grep -c . || true)
    if ! grep -q 'BENCHMARKS NOT SIGNIFICANTLY CHANGED\|SOME BENCHMARKS HAVE CHANGED' "$log" ||
        grep -Eq '\bfailed\b|Traceback' "$log"; then
        echo "aa-check.sh: run $run did not compare every benchmark (see $log)" >&2
        exit 3
    fi
    echo "A/A run $run of $runs, --factor $factor, --bench $bench: $flagged flagged"
    [ -z "$rows" ] || printf '%s\n' "$rows"
    total=$((total + flagged))
done
echo "flagged in all: $total (logs in $logs)"
[ "$total" -eq 0 ]
