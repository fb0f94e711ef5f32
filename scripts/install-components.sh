#!/usr/bin/env bash
# Installs the real components the tests use, if missing; idempotent and quick when present.
#   - Prometheus 2.42 + promtool (Debian `prometheus`), curl
#   - Etsy statsd 0.9.0 (npm), into .tools/statsd (git-ignored)
#   - headless Chromium (Debian `chromium`, no recommends): tests/live_browser.rs, screenshot.sh
# Never starts a packaged daemon: tests start their own on 127.0.0.1 with free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool   >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl       >/dev/null 2>&1 || need_apt+=(curl)
command -v chromium   >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-components: need root to apt-get install ${need_apt[*]}" >&2; exit 1
  fi
  # Debian's prometheus postinst would start a daemon on 0.0.0.0:9090 through invoke-rc.d;
  # a policy-rc.d that says no (exit 101) keeps any packaged daemon from starting.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

STATSD_DIR="$ROOT/.tools/statsd"
if [ ! -f "$STATSD_DIR/node_modules/statsd/stats.js" ]; then
  command -v npm >/dev/null 2>&1 || { echo "install-components: npm is missing (needed for statsd)" >&2; exit 1; }
  mkdir -p "$STATSD_DIR"
  npm install --prefix "$STATSD_DIR" --no-audit --no-fund --omit=optional --save-exact \
    --loglevel=error statsd@0.9.0 >/dev/null
fi

echo "components: $(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3); statsd $(node -p "require('$STATSD_DIR/node_modules/statsd/package.json').version"); $(chromium --version 2>/dev/null | head -1)"
