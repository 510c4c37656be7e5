#!/usr/bin/env bash
# TensorBoard over every run: http://localhost:6006 (PORT=... to change).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/tensorboard --logdir runs --port "${PORT:-6006}" "$@"
