#!/usr/bin/env bash
# Writes a PNG of the live page (/vitals) of a demo run, made by headless Chromium.
#   scripts/screenshot.sh [OUT.png] [WIDTHxHEIGHT]     (default docs/vitals.png 1280x800)
# Builds the demo, runs it on a free loopback port for at most 40 s, waits until its load has
# run for a few seconds, takes the screenshot, and stops the demo (by its PID).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/vitals.png}
size=${2:-1280x800}
command -v chromium >/dev/null 2>&1 || { echo "screenshot: chromium is missing: run scripts/install-components.sh" >&2; exit 1; }
cargo build -q --example demo
work=$(mktemp -d)
target/debug/examples/demo --seconds 40 --port 0 --every 100 > "$work/demo.out" 2>&1 &
demo=$!
cleanup() { kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
url=
for _ in $(seq 100); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*/vitals' "$work/demo.out" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "screenshot: the demo printed no /vitals URL" >&2; cat "$work/demo.out" >&2; exit 1; }
sleep "${SCREENSHOT_AFTER:-8}"   # let the load fill the page
mkdir -p "$(dirname "$out")"
timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$work/profile" --window-size="${size/x/,}" \
  --virtual-time-budget=3000 --screenshot="$out" "$url" > "$work/chromium.log" 2>&1 \
  || { cat "$work/chromium.log" >&2; exit 1; }
[ -s "$out" ] || { echo "screenshot: no PNG written" >&2; cat "$work/chromium.log" >&2; exit 1; }
echo "screenshot: $out ($size, $(stat -c %s "$out") bytes) of $url"
