#!/usr/bin/env bash
# What the Grafana panels show vs what happened: the demo app and its traffic under two real
# Prometheus 2.42 servers (classic, and --enable-feature=native-histograms), the panels' own
# expressions (dashboards/grafana/tower-vitals.json) over the whole run vs exact quantiles and
# means of the same samples. Prints route x phase x p50/p95/p99, shown vs exact, and the
# median / max relative error per mode; exits non-zero beyond the targets (classic: median
# <= 20 %, max <= 100 %; native: median <= 5 %, max <= 12 %; means <= 1 %). Then the demo's
# statsd traffic (|ms timers) through a real Etsy statsd 0.9: its mean and upper_90 per tag set
# vs exact (target <= 5 %).
#
#   ./scripts/fidelity.sh            # 60 s of traffic
#   ./scripts/fidelity.sh 20         # 20 s
# scripts/test.sh runs the same test with 12 s (cargo test --test fidelity).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
./scripts/install-components.sh >/dev/null
# Both comparisons (Prometheus classic + native; Etsy statsd) run side by side.
FIDELITY_SECONDS=$seconds cargo test -q --all-features --test fidelity -- --nocapture 2>&1 \
  | sed -E 's/^\.+//' | grep -v -E '^(running [0-9]+ tests?|test result:.*)$' \
  || { echo "fidelity: FAILED" >&2; exit 1; }
