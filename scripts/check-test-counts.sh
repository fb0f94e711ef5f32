#!/usr/bin/env bash
# Checks the output of `cargo test --all-features` (the file given as $1) against the list of
# test binaries below: each must have run and passed at least its number of tests. A binary
# that did not run, or ran fewer (e.g. a feature-gated file that compiled to nothing, a module
# left out of its main.rs), fails; so does a binary missing from the list. Prints the total of
# tests passed. Used by scripts/test.sh; raise a count when you add tests.
set -euo pipefail
log=${1:?usage: check-test-counts.sh CARGO_TEST_OUTPUT}

# Each test binary, as cargo names it ("Running <target>" / "Doc-tests <crate>"), and the
# fewest tests it must pass.
expected=(
  "unittests src/lib.rs=86"
  "tests/layer/main.rs=80"
  "tests/exporters/main.rs=12"
  "tests/alloc.rs=14"
  "tests/cache_memory.rs=1"
  "tests/dashboards.rs=12"
  "tests/exemplars.rs=1"
  "tests/exporter_faults.rs=1"
  "tests/fidelity.rs=3"
  "tests/live.rs=2"
  "tests/live_browser.rs=1"
  "tests/prometheus.rs=7"
  "tests/prometheus_lost.rs=1"
  "tests/prometheus_unscraped.rs=1"
  "tests/scrape_latency.rs=1"
  "tests/scrape_attacks.rs=4"
  "tests/series_budget.rs=1"
  "tests/soak.rs=1"
  "Doc-tests tower_vitals=34"
)

# "<binary>=<passed>" for each binary that ran: its "Running"/"Doc-tests" line, then the
# "test result:" line that follows it.
ran=$(awk '
  /^ *Running / { sub(/^ *Running /, ""); sub(/ \(.*$/, ""); name = $0 }
  /^ *Doc-tests / { sub(/^ */, ""); name = $0 }
  /^test result: / {
    n = $0; sub(/^test result: [a-zA-Z]+\. /, "", n); sub(/ passed.*$/, "", n)
    print name "=" n; name = ""
  }' "$log")

count_of() { printf '%s\n' "$2" | awk -F= -v n="$1" '$1 == n { print $2; exit }'; }
list=$(printf '%s\n' "${expected[@]}")
total=0
failed=0
for entry in "${expected[@]}"; do
  name=${entry%=*}
  want=${entry##*=}
  got=$(count_of "$name" "$ran")
  if [ -z "$got" ]; then
    echo "test binary '$name' did not run (expected at least $want tests)" >&2
    failed=1
  elif [ "$got" -lt "$want" ]; then
    echo "test binary '$name' passed $got tests, expected at least $want" >&2
    failed=1
  else
    total=$((total + got))
  fi
done
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=${line%=*}
  if [ -z "$(count_of "$name" "$list")" ]; then
    echo "test binary '$name' is not in scripts/check-test-counts.sh's list: add it" >&2
    failed=1
  fi
done <<< "$ran"
if [ "$failed" -ne 0 ]; then
  echo "cargo test: a test binary is missing or short of tests" >&2
  exit 1
fi
echo "$total"
