#!/usr/bin/env bash
# Install the Netmon sniffer agent on a Linux host with systemd (run as root).
#
#   netmon agents add branch-gw-1 --branch paris --server-url wss://netmon.example.org > agent.toml
#   sudo deploy/install.sh --config agent.toml --interface eth0
#
# What it does (each step skips what is already there, so running it again upgrades):
#   - a system user "netmon-agent" with no shell and no home; the service gives it only
#     CAP_NET_RAW and CAP_NET_ADMIN (AmbientCapabilities in netmon-agent.service), never root;
#   - a virtualenv in /opt/netmon-agent with the netmon package and its [agent] extra;
#   - /etc/netmon/agent.toml (0640 root:netmon-agent: it holds the agent's key), with the spool
#     moved to /var/lib/netmon/spool (0750, owned by the service user);
#   - /etc/systemd/system/netmon-agent.service, enabled and started.
# --root DIR installs into a staging tree instead (no user, no systemctl): for packaging/tests.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE_DIR=$(dirname "$SCRIPT_DIR")
SERVICE_USER=netmon-agent
PREFIX=/opt/netmon-agent
CONFIG_DIR=/etc/netmon
STATE_DIR=/var/lib/netmon
UNIT_DIR=/etc/systemd/system
PACKAGE="${SOURCE_DIR}[agent]"
CONFIG=""
INTERFACE=""
ROOT=""
PYTHON=${PYTHON:-python3}

usage() {
  cat <<USAGE
usage: $0 --config AGENT_TOML [--interface IFACE] [--package PIP_SPEC] [--root DIR]

  --config FILE    agent.toml printed by \`netmon agents add\` (required on first install)
  --interface IF   capture interface (default: the config's, else "eth0")
  --package SPEC   what pip installs (default: this checkout, "$PACKAGE")
  --root DIR       stage into DIR: no user is created and systemd is not touched
  --skip-package   keep the installed package as it is (only config, spool and unit)
USAGE
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

log() {
  echo "install.sh: $*"
}

parse_args() {
  while (($#)); do
    case $1 in
      --config) CONFIG=${2:?--config needs a file}; shift 2 ;;
      --interface) INTERFACE=${2:?--interface needs a name}; shift 2 ;;
      --package) PACKAGE=${2:?--package needs a pip spec}; shift 2 ;;
      --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
      --skip-package) PACKAGE=""; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
}

check_host() {
  if [[ -z $ROOT ]]; then
    [[ $(id -u) -eq 0 ]] || die "run as root (it creates a user and a systemd service)"
    command -v systemctl >/dev/null || die "systemd is required (systemctl not found)"
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is older than 3.11"
  if [[ -n $CONFIG ]]; then
    [[ -r $CONFIG ]] || die "cannot read $CONFIG"
    grep -q '^key = "' "$CONFIG" || die "$CONFIG has no [transport] key: use the output of netmon agents add"
  elif [[ ! -f $ROOT$CONFIG_DIR/agent.toml ]]; then
    die "--config is required on the first install"
  fi
}

create_user() {
  [[ -n $ROOT ]] && return
  if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    log "creating system user $SERVICE_USER"
    useradd --system --no-create-home --home-dir "$STATE_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
}

owner() {
  # root:netmon-agent on a real install; the caller's ids when staging.
  if [[ -n $ROOT ]]; then
    echo "$(id -u):$(id -g)"
  else
    echo "root:$SERVICE_USER"
  fi
}

install_package() {
  [[ -z $PACKAGE ]] && return
  if [[ ! -x $ROOT$PREFIX/bin/python ]]; then
    log "creating the virtualenv $ROOT$PREFIX"
    "$PYTHON" -m venv "$ROOT$PREFIX"
  fi
  log "installing $PACKAGE"
  "$ROOT$PREFIX/bin/pip" install --quiet --upgrade "$PACKAGE"
}

install_config() {
  local group_owner service_owner target=$ROOT$CONFIG_DIR/agent.toml
  group_owner=$(owner)
  service_owner=$SERVICE_USER:$SERVICE_USER
  [[ -n $ROOT ]] && service_owner=$group_owner
  install -d -m 0750 -o "${group_owner%%:*}" -g "${group_owner##*:}" "$ROOT$CONFIG_DIR"
  install -d -m 0750 -o "${service_owner%%:*}" -g "${service_owner##*:}" \
    "$ROOT$STATE_DIR" "$ROOT$STATE_DIR/spool"
  if [[ -n $CONFIG ]]; then
    log "writing $target"
    local text
    text=$(sed -e "s|^spool_dir = .*|spool_dir = \"$STATE_DIR/spool\"|" "$CONFIG")
    if [[ -n $INTERFACE ]]; then
      # Top-level keys must precede the first [table]; drop any old one and put ours first.
      text=$(printf 'interface = "%s"\n%s\n' "$INTERFACE" "$(grep -v '^interface = ' <<<"$text")")
    fi
    install -m 0640 -o "${group_owner%%:*}" -g "${group_owner##*:}" /dev/null "$target"
    printf '%s\n' "$text" >"$target"
  fi
}

install_unit() {
  install -d "$ROOT$UNIT_DIR"
  install -m 0644 "$SCRIPT_DIR/systemd/netmon-agent.service" "$ROOT$UNIT_DIR/netmon-agent.service"
  if [[ -n $ROOT ]]; then
    log "staged into $ROOT (systemd untouched)"
    return
  fi
  systemctl daemon-reload
  systemctl enable netmon-agent.service
  systemctl restart netmon-agent.service
  log "netmon-agent is running: journalctl -u netmon-agent -f"
}

main() {
  parse_args "$@"
  check_host
  create_user
  install_package
  install_config
  install_unit
}

main "$@"
