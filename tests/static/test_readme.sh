#!/usr/bin/env bash
# test_readme.sh - README's configuration table equals what the services declare; the commands it
# names exist as make targets; .ci/run calls make test.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/config-table.sh --check
for t in run test up down bench; do
  grep -q "make $t" README.md || { echo "FAIL - README does not mention make $t"; exit 1; }
  grep -qE "^$t:" Makefile || { echo "FAIL - Makefile has no $t target"; exit 1; }
done
echo "ok   - README commands exist as make targets"
grep -q '^make test$' .ci/run && echo "ok   - .ci/run calls make test"
