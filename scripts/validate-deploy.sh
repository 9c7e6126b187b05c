#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/ against the Kubernetes API schemas
# (kubernetes-validate, from PyPI, in .venv), strictly: unknown fields are errors.
#
#   scripts/validate-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/.venv"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "validate-deploy: installing kubernetes-validate into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==1.*" >&2
fi
"$venv/bin/kubernetes-validate" --strict deploy/*.yaml
