#!/usr/bin/env bash
# `dg check defs` on a throwaway DAGSTER_HOME (telemetry off), with the project's venv active.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
printf 'telemetry:\n  enabled: false\n' > "$home/dagster.yaml"
cd "$REPO"
VIRTUAL_ENV="$REPO/.venv" PATH="$REPO/.venv/bin:$PATH" DAGSTER_HOME="$home" ADAS_HOME="$home/adas" \
  dg check defs --log-level warning
