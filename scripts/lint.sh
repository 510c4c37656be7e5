#!/usr/bin/env bash
# ruff over the library, tests, scripts, benchmarks and notebook sources.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check labkit tests scripts benchmarks notebooks/*.py "$@"
.venv/bin/black --check --quiet labkit tests scripts benchmarks
