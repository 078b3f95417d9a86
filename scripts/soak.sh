#!/usr/bin/env bash
# soak.sh - `make soak`: the long whole-pipeline soak (tests/soak/soak.sh; SOAK_SECONDS, default
# 600, SOAK_SEED). Traffic + seeded chaos + hostile requests, checked by tests/soak/oracle.py.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec bash "$root/tests/soak/soak.sh" --checkpoint-every "${SOAK_CHECKPOINT_EVERY:-150}" ${SOAK_HOSTILE:---hostile} "$@"
