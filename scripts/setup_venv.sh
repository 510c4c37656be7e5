#!/usr/bin/env bash
# Create .venv, install torch for this machine's GPU, the requirements and labkit (editable),
# and register a Jupyter kernel for the venv. Safe to run again.
#   TORCH_CUDA=cu126|cpu|default  force a wheel choice (see ENVIRONMENT.md)
#   PYTHON=python3.11             interpreter to build the venv from
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

echo "[setup] torch: $("$PYTHON" scripts/choose_torch.py --explain)"
# shellcheck disable=SC2046
"${PIP[@]}" -q $("$PYTHON" scripts/choose_torch.py)
echo "[setup] labkit (editable) + its dependencies and extras (requirements.txt, constraints.txt)"
"${PIP[@]}" -q -r requirements.txt
"$VENV/bin/python" -m ipykernel install --sys-prefix --name labkit --display-name "Python (labkit)" >/dev/null
# A double-click on a notebooks/*.py opens it as a notebook (this venv's JupyterLab only).
"$VENV/bin/jupytext-config" --settings-file "$VENV/etc/jupyter/labconfig/default_setting_overrides.json" \
  set-default-viewer python >/dev/null
echo "[setup] notebooks/*.ipynb from the .py sources"
"$VENV/bin/python" -m jupytext --quiet --update --to ipynb --set-kernel labkit notebooks/[0-9]*.py
"$VENV/bin/python" -c "import torch, torchvision, labkit; print('[setup] done: torch', torch.__version__, '| torchvision', torchvision.__version__, '| CUDA available:', torch.cuda.is_available())"
