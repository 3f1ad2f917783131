#!/usr/bin/env bash
# CodeDeploy BeforeInstall: room for the new release, and old releases pruned.
#   USERSD_RELEASES_DIR  where the .deb files land (default /opt/usersd/releases, as in appspec.yml)
#   KEEP_RELEASES        how many .deb files to keep before the new one arrives (default 3)
#   MIN_FREE_MB          free space required on the releases and /var filesystems (default 500)
set -euo pipefail

RELEASES_DIR=${USERSD_RELEASES_DIR:-/opt/usersd/releases}
KEEP=${KEEP_RELEASES:-3}
MIN_FREE_MB=${MIN_FREE_MB:-500}

log() { printf 'before_install: %s\n' "$*"; }
die() { printf 'before_install: error: %s\n' "$*" >&2; exit 1; }

case "$KEEP" in '' | *[!0-9]*) die "KEEP_RELEASES must be a number, got '$KEEP'" ;; esac
case "$MIN_FREE_MB" in '' | *[!0-9]*) die "MIN_FREE_MB must be a number, got '$MIN_FREE_MB'" ;; esac

mkdir -p "$RELEASES_DIR"
chmod 0755 "$RELEASES_DIR"

# Oldest first by modification time (each deployment copies its .deb anew), then drop all but KEEP.
mapfile -t releases < <(find "$RELEASES_DIR" -maxdepth 1 -type f -name 'usersd_*.deb' -printf '%T@ %p\n' |
  sort -n | cut -d' ' -f2-)
excess=$((${#releases[@]} - KEEP))
for ((i = 0; i < excess; i++)); do
  log "removing old release ${releases[i]}"
  rm -f -- "${releases[i]}"
done

# dpkg needs room under /var (cache, the unpacked package) and the copy lands in RELEASES_DIR.
for dir in "$RELEASES_DIR" /var; do
  free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  free_mb=$((free_kb / 1024))
  if [ "$free_mb" -lt "$MIN_FREE_MB" ]; then
    die "only ${free_mb} MiB free on the filesystem of $dir; need ${MIN_FREE_MB} MiB (MIN_FREE_MB)"
  fi
  log "${free_mb} MiB free on the filesystem of $dir"
done
