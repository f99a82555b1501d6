#!/usr/bin/env bash
# Installs everything Netmon and its tests need on a fresh Debian machine: the system tools the
# tests drive for real (nginx, tcpdump, tshark, chromium, ...), a virtualenv with the project,
# and the pinned front-end files. Safe to run again: every step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
SYSTEM_PACKAGES=(nginx tcpdump tshark dnsmasq openssh-server openssh-client nmap hping3
  dnsutils ripgrep chromium shellcheck iproute2 curl openssl libcap2-bin)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages (install them as root): ${missing[*]}" >&2
  fi
fi

if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp=$VENV/.netmon-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "setup: installing Python packages into $VENV"
  "$VENV/bin/pip" install -q -e '.[server,agent,dev]'
  touch "$stamp"
fi

if [[ -f web/package.json ]]; then
  if [[ ! -d web/node_modules || web/package-lock.json -nt web/node_modules ]]; then
    echo "setup: installing pinned front-end files (npm ci)"
    (cd web && npm ci --no-audit --no-fund --silent --ignore-scripts)
  fi
fi
echo "setup: ready"
