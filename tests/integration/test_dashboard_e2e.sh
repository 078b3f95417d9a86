#!/usr/bin/env bash
# test_dashboard_e2e.sh - the browser tests against the real stack: `lam.sh up` on free ports,
# generated traffic (history + live), then the dashboard driven by playwright-core in Chromium:
# every panel shows data, time range and filters re-query, "Run batch now" runs a real batch,
# a malformed dashboard file shows its error.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. scripts/common.sh
BIN="${LAM_BIN_DIR:-$root/build/bin}"
if [ ! -d tests/browser/node_modules ] || ! command -v chromium >/dev/null 2>&1; then
  echo "FAIL - browser tests need chromium and tests/browser/node_modules (make deps)"; exit 1
fi
lam_throwaway_env "$LAM_TEST_TMP/e2e"
mkdir -p "$LAM_STATE_DIR"; chmod 755 "$LAM_STATE_DIR"
# The served folder: the real dashboards plus one malformed file.
dash="$LAM_TEST_TMP/e2e-dashboards"
mkdir -p "$dash"
cp -r dashboards/app dashboards/index.html dashboards/*.json "$dash/"
printf '{"id": "broken", "title": "Broken",\n  "panels": [ {"type": "tile", }\n' >"$dash/broken.json"
export LAM_DASHBOARDS_DIR="$dash"
cleanup() { scripts/lam.sh down >/dev/null 2>&1; }
trap cleanup EXIT
scripts/lam.sh up >/dev/null || { echo "FAIL - the stack did not come up"; exit 1; }
"$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 3000 --count 6000 --batch 50 --backfill-days 2 \
  --backfill-per-day 3000 --quiet >/dev/null || { echo "FAIL - loadgen"; exit 1; }
LAM_DASHBOARD_URL="http://$LAM_SERVING_ADDR" LAM_DASHBOARD_BROKEN_ID=broken node --test tests/browser/
