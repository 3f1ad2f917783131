#!/usr/bin/env bash
# CodeDeploy AfterInstall: install this revision's .deb and check the config the service will use.
# The running service is not restarted here (see application_stop.sh); ApplicationStart reloads it.
#   USERSD_RELEASES_DIR  where appspec.yml copied the .deb (default /opt/usersd/releases)
#   USERSD_CONFIG        the production config (default /etc/usersd/usersd.json)
set -euo pipefail

RELEASES_DIR=${USERSD_RELEASES_DIR:-/opt/usersd/releases}
CONFIG=${USERSD_CONFIG:-/etc/usersd/usersd.json}
HOOK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'after_install: %s\n' "$*"; }
die() { printf 'after_install: error: %s\n' "$*" >&2; exit 1; }

# The .deb of THIS revision: the one in the bundle's release/ (next to hooks/), as copied to
# RELEASES_DIR. Picking the highest version instead would reinstall the newer build on a rollback.
deb=""
bundle_deb=$(find "$HOOK_DIR/../release" -maxdepth 1 -type f -name 'usersd_*.deb' -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
if [ -n "$bundle_deb" ] && [ -f "$RELEASES_DIR/$bundle_deb" ]; then
  deb="$RELEASES_DIR/$bundle_deb"
else
  # Not run from a bundle: the most recently copied one.
  newest=$(find "$RELEASES_DIR" -maxdepth 1 -type f -name 'usersd_*.deb' -printf '%T@ %p\n' 2>/dev/null |
    sort -n | tail -n 1 | cut -d' ' -f2-)
  deb=$newest
fi
[ -n "$deb" ] || die "no usersd_*.deb in $RELEASES_DIR (is release/ in the revision bundle?)"
log "installing $deb"

# A package upgrade would normally restart the service from its maintainer scripts
# (deb-systemd-invoke / invoke-rc.d). While we install, a policy-rc.d refuses actions on usersd only
# (exit 101), so the running supervisor keeps serving until ApplicationStart reloads it.
POLICY=/usr/sbin/policy-rc.d
if [ -e "$POLICY" ]; then
  log "warning: $POLICY exists already; left as is (the package may restart usersd)"
else
  cat >"$POLICY" <<'POLICY_EOF'
#!/bin/sh
# Temporary, from deploy/codedeploy/hooks/after_install.sh: ApplicationStart reloads usersd.
case "$1" in usersd | usersd.service) exit 101 ;; esac
exit 0
POLICY_EOF
  chmod 0755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
# apt resolves new dependencies; a stale package index is refreshed once if that fails.
apt_install() {
  apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    --allow-downgrades "$deb"
}
if ! apt_install; then
  log "apt-get install failed; refreshing the package index and retrying once"
  apt-get update
  apt_install
fi
systemctl daemon-reload
systemctl enable usersd.service

# A config the new build rejects fails the deployment here, before anything is reloaded.
if ! usersd config check --config "$CONFIG"; then
  die "usersd config check --config $CONFIG failed: fix the config; the running service was not touched"
fi
log "installed $(usersd --version 2>/dev/null || echo usersd); config $CONFIG is valid"
