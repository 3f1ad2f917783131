#!/bin/bash
# Builds the usersd .deb with dpkg-deb from an already built Release tree.
#   deploy/package/build-deb.sh BUILD_DIR OUT_DIR      -> OUT_DIR/usersd_<version>-<rev>_<arch>.deb
# The version is what BUILD_DIR/usersd --version says; DEB_REVISION (default 1) is the Debian revision.
# Depends is computed by dpkg-shlibdeps from the binary's NEEDED libraries. Prints the .deb's path last.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR OUT_DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_dir=$(cd "$1" && pwd)
mkdir -p "$2"
out_dir=$(cd "$2" && pwd)
binary="$build_dir/usersd"

for tool in dpkg-deb dpkg-shlibdeps strip; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is required (apt-get install dpkg-dev binutils)" >&2; exit 1; }
done
[ -x "$binary" ] || { echo "$0: $binary not found: build it first (make build)" >&2; exit 1; }
if [ -f "$build_dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build_dir/CMakeCache.txt"; then
  echo "$0: $build_dir is not a Release build (CMAKE_BUILD_TYPE=Release)" >&2
  exit 1
fi

upstream_version=$("$binary" --version | awk '{print $NF; exit}')
[[ "$upstream_version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "$0: unexpected version '$upstream_version'" >&2; exit 1; }
version="$upstream_version-${DEB_REVISION:-1}"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-"usersd maintainers <maintainers@users.noreply.r-seed-b127c6a8.example>"}
# Reproducible timestamps (changelog date, file mtimes): the last commit, else now.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
doc="$root/usr/share/doc/usersd"

install -d -m 0755 "$root/usr/bin" "$root/etc/usersd" "$root/etc/sysctl.d" "$root/lib/systemd/system" \
  "$doc" "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides" "$root/DEBIAN"
install -m 0755 "$binary" "$root/usr/bin/usersd"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/usersd"
install -m 0644 "$repo/etc/usersd.json" "$root/etc/usersd/usersd.json"
# Secrets: root:root 0640 in the archive; postinst makes it root:usersd once the group exists.
install -m 0640 "$repo/etc/usersd.env" "$root/etc/usersd/usersd.env"
install -m 0644 "$repo/ami/files/60-usersd.conf" "$root/etc/sysctl.d/60-usersd.conf"
install -m 0644 "$repo/systemd/usersd.service" "$root/lib/systemd/system/usersd.service"
install -m 0644 "$repo/README.md" "$doc/README.md"
install -m 0644 "$here/copyright" "$doc/copyright"
install -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/usersd"
gzip -9n -c "$here/usersd.1" > "$root/usr/share/man/man1/usersd.1.gz"
chmod 0644 "$root/usr/share/man/man1/usersd.1.gz"
{
  echo "usersd ($version) unstable; urgency=medium"
  echo
  echo "  * Package of usersd $upstream_version built from $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo 'a source tree')."
  echo
  echo " -- $maintainer  $(date -R -u -d "@$epoch")"
} | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
# Everything under /etc is a conffile: local edits survive upgrades, and usersd.env (secrets) is
# never overwritten.
(cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"

# Depends: dpkg-shlibdeps maps each NEEDED library to its package via the shlibs/symbols files; it
# wants to run from a source tree with debian/control, so give it a skeleton.
mkdir -p "$work/src/debian"
printf 'Source: usersd\n\nPackage: usersd\nArchitecture: any\n' > "$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/usersd" 2>"$work/shlibdeps.err") || {
  cat "$work/shlibdeps.err" >&2
  exit 1
}
depends=${shlibs#shlibs:Depends=}
[ -n "$depends" ] || { echo "$0: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: usersd
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: adduser, $depends
Section: net
Priority: optional
Description: Users API server with its own process supervisor
 usersd serves a Users API (registration, login with JWT, users CRUD) from
 one binary that supervises its own worker processes: zero-downtime rolling
 reloads, graceful draining stops and crash restarts with backoff.
 .
 Users are stored in an embedded SQLite file (/var/lib/usersd) by default, or
 in MongoDB when several instances share one database. The package installs
 the systemd unit (usersd.service) and the production configuration in
 /etc/usersd; secrets go in /etc/usersd/usersd.env.
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$epoch" {} +

deb="$out_dir/usersd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
