#!/usr/bin/env bash
# The README's test command: installs what the tests need (if missing), then runs the checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
t0=$SECONDS
step() { echo; echo "== $* ($((SECONDS - t0))s)"; }

step "install real components"
./scripts/install-components.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --all-features -- -D warnings

step "every integration test file is compiled by exactly one test binary"
# tests/*.rs: one binary each (autotests); tests/<dir>/main.rs: one binary, whose other files
# must be its modules (a file no `mod` names would never compile, and its tests never run).
for main in tests/*/main.rs; do
  dir=$(dirname "$main")
  for file in "$dir"/*.rs; do
    module=$(basename "$file" .rs)
    [ "$module" = main ] && continue
    grep -Eq "^mod $module;" "$main" || { echo "$file: not a module of $main (add \`mod $module;\`)" >&2; exit 1; }
  done
done

# Includes tests/dashboards.rs (every panel on a classic and a native-histograms Prometheus) and
# tests/fidelity.rs (panel percentiles and means vs exact values in both modes, 12 s of demo
# traffic; Etsy statsd mean/upper_90 vs exact): scripts/fidelity.sh is the longer run.
step "cargo test (unit, integration, real components incl. dashboards and fidelity, doctests)"
log=$(mktemp)
# The components were installed above: a test that needs one fails if it is missing, never skips.
TOWER_VITALS_REQUIRE_COMPONENTS=1 cargo test --all-features 2>&1 | tee "$log"
if grep -q 'skipped: needs' "$log"; then
  grep 'skipped: needs' "$log" >&2; rm -f "$log"
  echo "tests above were skipped for a missing component" >&2; exit 1
fi
# Every test binary must pass at least its expected number of tests (scripts/check-test-counts.sh).
passed=$(./scripts/check-test-counts.sh "$log") || { rm -f "$log"; exit 1; }
# The live page's headless-Chromium test must have run.
browser_ran=$(grep -c '^test the_page_in_chromium_shows_what_vitals_json_says \.\.\. ok' "$log" || true)
rm -f "$log"
if [ "$browser_ran" -eq 0 ]; then echo "the Chromium test of /vitals did not run" >&2; exit 1; fi

step "the library without default features, and with each feature alone"
cargo check --no-default-features --lib
features=$(sed -n '/^\[features\]/,/^\[/p' Cargo.toml | grep -oE '^[a-z][a-z0-9_-]*' | grep -v '^default$')
[ -n "$features" ] || { echo "no features found in Cargo.toml" >&2; exit 1; }
for feature in $features; do
  echo "-- --no-default-features --features $feature"
  # Warnings fail too (not through RUSTFLAGS: that would rebuild every dependency).
  out=$(cargo check --no-default-features --features "$feature" --lib --message-format short 2>&1) \
    || { echo "$out" >&2; exit 1; }
  if grep -Eq '(^|: )(warning|error)(\[[^]]*\])?: ' <<< "$out"; then
    echo "$out" >&2; echo "feature $feature alone: warnings" >&2; exit 1
  fi
done

step "rustdoc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --all-features --no-deps --quiet

step "build benches and examples"
cargo build --all-features --examples --benches

step "demo, bounded (the README's run command, 3 s)"
demo_out=$(cargo run -q --all-features --example demo -- --seconds 3 --port 0)
echo "$demo_out" | head -1
echo "$demo_out" | tail -4
echo "$demo_out" | head -1 | grep -q '^live page: http://127.0.0.1:[0-9]*/vitals ' || { echo "demo: /vitals URL not printed first" >&2; exit 1; }
echo "$demo_out" | grep -q '^check: the layer recorded every request' || { echo "demo: table does not match its load" >&2; exit 1; }
echo "$demo_out" | grep -q 'small-blocks .*<-- small blocks' || { echo "demo: small-block route not flagged" >&2; exit 1; }

echo
echo "scripts/test.sh: all checks passed, $passed tests in $((SECONDS - t0))s"
