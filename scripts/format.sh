#!/usr/bin/env bash
# black (and ruff's import sorting) over the code.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --select I --fix --quiet labkit tests scripts benchmarks
.venv/bin/black --quiet labkit tests scripts benchmarks "$@"
