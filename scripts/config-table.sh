#!/usr/bin/env bash
# config-table.sh [--check] - the README's configuration table, generated from the services' own
# declarative tables (`<service> --config-table`). Without --check it rewrites README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${LAM_BIN_DIR:-build/bin}"
table="$( {
  echo "| variable | used by | default | meaning |"
  echo "|---|---|---|---|"
  for s in ingest speed_layer batch_layer serving; do "$BIN/$s" --config-table; done |
    awk -F' [|] ' '{ key=$1; if (key in seen) { users[key]=users[key] ", " $2 } else { seen[key]=1; order[++n]=key; users[key]=$2; rest[key]=$3 " | " $4 } }
         END { for (i=1;i<=n;i++) { k=order[i]; print k " | " users[k] " | " rest[k] } }'
} )"
new="$(awk -v t="$table" '
  /<!-- config-table:begin -->/ { print; print t; skip=1; next }
  /<!-- config-table:end -->/ { skip=0 }
  !skip { print }' README.md)"
if [ "${1:-}" = --check ]; then
  if [ "$new" != "$(cat README.md)" ]; then
    echo "FAIL - README.md configuration table is out of date: run scripts/config-table.sh"
    diff <(echo "$new") README.md || true
    exit 1
  fi
  echo "ok   - README.md configuration table matches the services' tables"
else
  printf '%s\n' "$new" >README.md
fi
