#!/usr/bin/env bash
# System packages the tests and the local rollout use, from Debian's archive (idempotent):
#   chromium - the Dagster UI tested in a real browser (Playwright drives it; no browser download)
#   nginx    - the weighted traffic split of the local canary
#   bwrap    - the sandbox candidate models are loaded in (Debian package bubblewrap)
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packaged nginx service is not used (the canary runs its own nginx); keep it from holding port 80.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
pkill -x nginx >/dev/null 2>&1 || true
echo "installed: ${need[*]}"
