#!/usr/bin/env bash
# deps.sh - install what lam needs and is missing: Debian packages (apt-get) and Kafka's jars (mvn).
# Idempotent and quiet when nothing is missing. LAM_DEPS_BROWSER=0 skips chromium/playwright.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

PKGS=(gcc make pkg-config clang libclang-rt-14-dev
      librdkafka-dev libhiredis-dev libpq-dev libmicrohttpd-dev libcmocka-dev libzstd-dev liblz4-dev libjansson-dev
      redis-server postgresql default-jdk-headless maven kcat curl wrk python3 python3-yaml
      procps iproute2 docker-compose python3-jsonschema python3-venv clang-format)
if [ "${LAM_DEPS_BROWSER:-1}" != 0 ]; then PKGS+=(chromium nodejs npm); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nvm, the machine image): accept any working node/npm.
if [ ${#missing[@]} -gt 0 ]; then
  filtered=()
  for p in "${missing[@]}"; do
    case "$p" in
      nodejs) command -v node >/dev/null 2>&1 || filtered+=("$p") ;;
      npm) command -v npm >/dev/null 2>&1 || filtered+=("$p") ;;
      default-jdk-headless) command -v java >/dev/null 2>&1 || filtered+=("$p") ;;
      maven) command -v mvn >/dev/null 2>&1 || filtered+=("$p") ;;
      *) filtered+=("$p") ;;
    esac
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Apache Kafka broker jars from Maven Central, into a cache shared by every checkout.
if [ ! -f "$LAM_KAFKA_LIBS/kafka_2.13-$LAM_KAFKA_VERSION.jar" ]; then
  echo "deps: fetching Apache Kafka $LAM_KAFKA_VERSION from Maven Central into $LAM_KAFKA_LIBS"
  tmp="$LAM_KAFKA_LIBS.tmp.$$"
  rm -rf "$tmp"
  mvn -q -B -f scripts/kafka-pom.xml -Dkafka.version="$LAM_KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >/dev/null
  rm -rf "$LAM_KAFKA_LIBS"; mv "$tmp" "$LAM_KAFKA_LIBS"
fi

# Python test tools (schemathesis) from PyPI, in a virtualenv beside the Kafka jars.
if [ ! -f "$LAM_VENV/.stamp" ] || [ scripts/requirements-test.txt -nt "$LAM_VENV/.stamp" ]; then
  echo "deps: pip install -r scripts/requirements-test.txt into $LAM_VENV"
  rm -rf "$LAM_VENV"
  python3 -m venv "$LAM_VENV"
  "$LAM_VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt >"/tmp/lam-pip.$$.log" 2>&1 || {
    tail -5 "/tmp/lam-pip.$$.log" >&2; rm -f "/tmp/lam-pip.$$.log"; echo "deps: pip install failed" >&2; exit 1; }
  rm -f "/tmp/lam-pip.$$.log"
  touch "$LAM_VENV/.stamp"
fi

# Browser-test and dashboard JavaScript dependencies, from the npm lockfiles.
if [ "${LAM_DEPS_BROWSER:-1}" != 0 ]; then
  for d in dashboards tests/browser bench/duckdb; do
    if [ -f "$d/package-lock.json" ] && { [ ! -d "$d/node_modules" ] || [ "$d/package-lock.json" -nt "$d/node_modules" ]; }; then
      echo "deps: npm ci in $d"
      (cd "$d" && npm ci --no-audit --no-fund >"/tmp/lam-npm-ci.$$.log" 2>&1 && touch node_modules) || {
        tail -5 "/tmp/lam-npm-ci.$$.log" >&2; rm -f "/tmp/lam-npm-ci.$$.log"
        echo "deps: npm ci failed in $d" >&2; exit 1; }
      rm -f "/tmp/lam-npm-ci.$$.log"
    fi
  done
fi
