#!/usr/bin/env bash
# Provisions the usersd Golden AMI (run by ami/usersd.pkr.hcl on the builder instance, as root):
#   1. installs the usersd .deb (apt resolves its dependencies) without starting the service,
#   2. keeps the package's /etc/sysctl.d/60-usersd.conf (net.ipv4.tcp_migrate_req=1) and adds 61-usersd-ami.conf,
#   3. makes sure the service may open enough files,
#   4. enables usersd.service (it starts at the instance's first boot, not in the AMI),
#   5. cleans what must not be shared by every instance: apt caches, logs, machine-id, SSH host
#      keys, shell history, cloud-init state, and any JWT secret (the fleet's one comes at deploy time).
#
# Usage:
#   provision.sh [--deb-dir DIR | --deb FILE] [--files-dir DIR] [--skip-upgrade]   # on the builder
#   provision.sh --root SCRATCH [...]                                              # dry run
#
# --root SCRATCH is a dry run against a scratch root: every file is written (and cleaned) under
# SCRATCH, and commands that would change the host (apt-get, systemctl, cloud-init, sysctl) are
# printed as "would run: ..." instead of being run. It needs neither root nor a .deb.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=""
DRY_RUN=0
DEB=""
DEB_DIR="$SCRIPT_DIR"
FILES_DIR="$SCRIPT_DIR/files"
UPGRADE=1

log() { printf 'provision: %s\n' "$*"; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; DRY_RUN=1; shift 2 ;;
    --deb) [ $# -ge 2 ] || die "--deb needs a file"; DEB=$2; shift 2 ;;
    --deb-dir) [ $# -ge 2 ] || die "--deb-dir needs a directory"; DEB_DIR=$2; shift 2 ;;
    --files-dir) [ $# -ge 2 ] || die "--files-dir needs a directory"; FILES_DIR=$2; shift 2 ;;
    --skip-upgrade) UPGRADE=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

if [ "$DRY_RUN" -eq 1 ]; then
  [ -d "$ROOT" ] || die "--root $ROOT: not a directory"
  ROOT=$(cd "$ROOT" && pwd -P)
  [ "$ROOT" != "/" ] || die "--root / is not a dry run: run without --root (as root) instead"
  log "dry run against scratch root $ROOT: the host is not changed"
else
  [ "$(id -u)" -eq 0 ] || die "must run as root (or use --root DIR for a dry run)"
fi

# Runs a command that changes the host, or only says so in a dry run.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf 'would run: %s\n' "$*"
  else
    log "running: $*"
    "$@"
  fi
}

# --- 1. the .deb ---------------------------------------------------------------------------------
if [ -z "$DEB" ]; then
  # The newest usersd_*.deb in DEB_DIR (version sort on the file names).
  DEB=$(find "$DEB_DIR" -maxdepth 1 -name 'usersd_*.deb' -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  [ -z "$DEB" ] || DEB="$DEB_DIR/$DEB"
fi
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
  [ "$DRY_RUN" -eq 1 ] || die "no usersd .deb found (looked for ${DEB:-$DEB_DIR/usersd_*.deb})"
  DEB="$DEB_DIR/usersd_VERSION_amd64.deb"
  log "no .deb found; the dry run shows the install of $DEB"
fi
case "$DEB" in /*) ;; *) DEB="$PWD/$DEB" ;; esac # apt-get installs a local file only by path

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# Nothing may start during the build: a policy-rc.d answering 101 makes the package scripts
# (deb-systemd-invoke, invoke-rc.d) skip starts and restarts. Removed again on exit.
POLICY="$ROOT/usr/sbin/policy-rc.d"
POLICY_OURS=0
cleanup_policy() {
  if [ "$POLICY_OURS" -eq 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup_policy EXIT
if [ ! -e "$POLICY" ]; then
  mkdir -p "$(dirname "$POLICY")"
  printf '#!/bin/sh\n# ami/provision.sh: no service starts while the AMI is built.\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"
  POLICY_OURS=1
fi

run apt-get update
if [ "$UPGRADE" -eq 1 ]; then
  run apt-get "${APT_OPTS[@]}" full-upgrade
fi
run apt-get "${APT_OPTS[@]}" install "$DEB"

# --- 2. sysctls ----------------------------------------------------------------------------------
# The package ships ami/files/60-usersd.conf as /etc/sysctl.d/60-usersd.conf (tcp_migrate_req,
# somaxconn; see README "The supervisor"), a conffile we leave as installed; it is copied here only
# when no package put it there (the --root dry run). The AMI's own additions go to a file of their
# own, each unless the base already sets it. Kept modest on purpose.
SYSCTL_BASE="$FILES_DIR/60-usersd.conf"
[ -f "$SYSCTL_BASE" ] || die "missing $SYSCTL_BASE (packer uploads ami/files next to this script)"
SYSCTL_PACKAGED="$ROOT/etc/sysctl.d/60-usersd.conf"
mkdir -p "$(dirname "$SYSCTL_PACKAGED")"
[ -f "$SYSCTL_PACKAGED" ] || install -m 0644 "$SYSCTL_BASE" "$SYSCTL_PACKAGED"
SYSCTL_FILE="$ROOT/etc/sysctl.d/61-usersd-ami.conf"
{
  printf '# Added by ami/provision.sh, after 60-usersd.conf from the usersd package.\n'
  add_sysctl() { # key value comment
    if grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$SYSCTL_BASE"; then return 0; fi
    printf '# %s\n%s = %s\n' "$3" "$1" "$2"
  }
  add_sysctl net.ipv4.tcp_migrate_req 1 \
    "Queued connections of a closing SO_REUSEPORT listener move to a sibling worker (Linux >= 5.14)."
  add_sysctl net.core.somaxconn 4096 "Room for bursts while workers are replaced."
  add_sysctl net.ipv4.tcp_max_syn_backlog 4096 "Half-open connections queued per listener, to match."
  add_sysctl net.ipv4.ip_local_port_range "10240 65535" \
    "More ephemeral ports for outgoing connections (MongoDB pools, health probes)."
  add_sysctl net.ipv4.tcp_fin_timeout 30 \
    "Release orphaned FIN-WAIT-2 sockets sooner (kernel default 60 s)."
} >"$SYSCTL_FILE"
chmod 0644 "$SYSCTL_FILE"
log "wrote ${SYSCTL_FILE}"
# The builder itself is not what runs usersd, but applying now catches a typo before the AMI exists.
run sysctl --system

# --- 3. open files -------------------------------------------------------------------------------
# Each open connection holds a descriptor; the unit sets LimitNOFILE=65536. Add a drop-in only if the
# installed unit does not set it (an older package).
UNIT=""
for candidate in "$ROOT/lib/systemd/system/usersd.service" "$ROOT/usr/lib/systemd/system/usersd.service" \
  "$ROOT/etc/systemd/system/usersd.service"; do
  if [ -f "$candidate" ]; then UNIT=$candidate; break; fi
done
if [ -n "$UNIT" ] && grep -q '^LimitNOFILE=' "$UNIT"; then
  log "$UNIT sets LimitNOFILE; no drop-in needed"
else
  DROPIN="$ROOT/etc/systemd/system/usersd.service.d/10-nofile.conf"
  mkdir -p "$(dirname "$DROPIN")"
  printf '# ami/provision.sh: each open connection holds a file descriptor.\n[Service]\nLimitNOFILE=65536\n' >"$DROPIN"
  chmod 0644 "$DROPIN"
  log "wrote $DROPIN"
fi

# --- 4. the service: enabled, not running ---------------------------------------------------------
run systemctl daemon-reload
run systemctl enable usersd.service
# In case something started it anyway (no policy-rc.d effect on a direct systemctl start).
if [ "$DRY_RUN" -eq 1 ]; then
  printf 'would run: %s\n' "systemctl stop usersd.service"
else
  systemctl stop usersd.service 2>/dev/null || true
fi

# --- 5. clean ------------------------------------------------------------------------------------
run apt-get "${APT_OPTS[@]}" autoremove --purge
run apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb

# No secret in the AMI: every instance of the fleet must share one JWT secret, delivered at deploy
# time (SSM Parameter Store / Secrets Manager -> /etc/usersd/jwt.secret, or USERSD_JWT_SECRET).
if [ -e "$ROOT/etc/usersd/jwt.secret" ]; then
  rm -f "$ROOT/etc/usersd/jwt.secret"
  log "removed $ROOT/etc/usersd/jwt.secret (must come from the deployment, not the AMI)"
fi

# cloud-init runs again on the first boot of each instance (and regenerates the SSH host keys).
if [ "$DRY_RUN" -eq 1 ] || command -v cloud-init >/dev/null 2>&1; then
  run cloud-init clean --logs --seed
fi
rm -rf "$ROOT"/var/lib/cloud/instances "$ROOT"/var/lib/cloud/instance "$ROOT"/var/lib/cloud/data \
  "$ROOT"/var/lib/cloud/sem

# Host keys: regenerated at first boot (cloud-init's ssh module; `ssh-keygen -A` otherwise).
rm -f "$ROOT"/etc/ssh/ssh_host_*

# machine-id: an empty file is the documented image state; systemd generates a new id at first boot.
if [ -e "$ROOT/etc/machine-id" ] || [ "$DRY_RUN" -eq 0 ]; then
  mkdir -p "$ROOT/etc"
  : >"$ROOT/etc/machine-id"
fi
rm -f "$ROOT/var/lib/dbus/machine-id"
if [ -d "$ROOT/var/lib/dbus" ]; then ln -s /etc/machine-id "$ROOT/var/lib/dbus/machine-id"; fi
rm -f "$ROOT"/var/lib/systemd/random-seed

# Logs: rotated files go, current ones are emptied (services keep their handles), journal goes.
if [ -d "$ROOT/var/log" ]; then
  find "$ROOT/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
  find "$ROOT/var/log" -type f -exec truncate -s 0 {} +
  rm -rf "$ROOT"/var/log/journal/*
fi

# Shell history and leftovers in /var/tmp (/tmp is a tmpfs or emptied at boot; packer's own files
# live there while this runs and it removes them itself).
rm -f "$ROOT"/root/.bash_history "$ROOT"/home/*/.bash_history "$ROOT"/root/.lesshst "$ROOT"/home/*/.lesshst
rm -rf "$ROOT"/var/tmp/*

if [ "$DRY_RUN" -eq 1 ]; then
  log "done (dry run: nothing outside $ROOT changed)"
else
  log "done: shut down and snapshot (packer does this)"
fi
