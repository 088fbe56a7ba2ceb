#!/usr/bin/env bash
# System packages the tests and the local rollout use, from Debian's archive (idempotent):
#   chromium - the Dagster UI tested in a real browser (Playwright drives it; no browser download)
#   nginx    - the weighted traffic split of the local canary
#   bwrap    - the sandbox candidate models are loaded in (Debian package bubblewrap)
#   docker-registry - the local OCI registry model packs are published to (CNCF Distribution)
#   skopeo   - an independent OCI client, to check what the registry holds
#   libb64-0d - a shared library Triton's perf_analyzer links (the serving benchmark's load generator)
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "install ok installed" || need+=(libb64-0d)
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
# Nor is the packaged registry service (the platform starts its own, on loopback, storage under ADAS_HOME).
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
echo "installed: ${need[*]}"
