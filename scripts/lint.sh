#!/usr/bin/env bash
# Lint, format check and type check, as CI runs them (ruff and mypy come with the test extra that
# scripts/bootstrap.sh installs). Configuration: [tool.ruff] and [tool.mypy] in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
