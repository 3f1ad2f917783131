"""The .deb (deploy/package/build-deb.sh) and the systemd unit it ships.

Builds the package from the Release binary in build/ (USERSD_BUILD_DIR), checks it with lintian,
installs it with dpkg into a scratch root (maintainer scripts run chrootless with $DPKG_ROOT, so the
host is never touched), runs the installed binary, and checks the unit with systemd-analyze
(verify, and the security exposure, which must stay <= 2.0). Needs root, dpkg-dev, lintian, systemd.

    build/venv/bin/python -m pytest -q tests/deploy/test_package.py
"""
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("USERSD_BUILD_DIR", REPO / "build"))
SCRIPT = REPO / "deploy" / "package" / "build-deb.sh"
UNIT = "usersd.service"
MAX_EXPOSURE = 2.0
SECRET = "test-secret-" + "x" * 40


def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([str(c) for c in cmd], **kw)


def require(tool, package):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is required for the package test: apt-get install {package}")


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the package test installs into a scratch root with dpkg: run it as root")
    require("dpkg-deb", "dpkg")
    require("dpkg-shlibdeps", "dpkg-dev")
    binary = BUILD_DIR / "usersd"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing: build it first (make build)")
    out = tmp_path_factory.mktemp("deb")
    r = run([SCRIPT, BUILD_DIR, out])
    assert r.returncode == 0, f"build-deb.sh failed:\n{r.stdout}\n{r.stderr}"
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out, r.stdout
    return path


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    """A scratch root with the package installed (and configured) by dpkg."""
    root = tmp_path_factory.mktemp("root")
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (root / f).touch()
    # Just enough of a system for useradd --prefix (what postinst runs when $DPKG_ROOT is set).
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\n")
    os.chmod(root / "etc/shadow", 0o640)
    os.chmod(root / "etc/gshadow", 0o640)
    if Path("/etc/login.defs").exists():
        shutil.copy("/etc/login.defs", root / "etc/login.defs")
    host_users = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
    r = dpkg_install(root, deb)
    assert r.returncode == 0, f"dpkg -i into {root} failed:\n{r.stdout}\n{r.stderr}"
    # The host's user database is untouched (chrootless scripts honour $DPKG_ROOT).
    assert (Path("/etc/passwd").read_text(), Path("/etc/group").read_text()) == host_users
    return root


def dpkg_install(root, deb):
    # --force-depends: the scratch root has no libraries installed (the binary runs with the host's).
    # --force-script-chrootless: maintainer scripts run on the host with DPKG_ROOT=root.
    return run(["dpkg", f"--root={root}", "--log=/dev/null", "--force-depends", "--force-script-chrootless",
                "-i", deb])


def passwd_entry(root, name):
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def group_id(root, name):
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return None


def test_package_size(deb, capsys):
    size = deb.stat().st_size
    info = run(["dpkg-deb", "-f", deb, "Installed-Size", "Depends", "Version", "Architecture"]).stdout
    with capsys.disabled():
        print(f"\n{deb.name}: {size} bytes ({size / 1024:.1f} KiB)\n{info}", end="")
    assert size > 0


def test_control_fields(deb):
    fields = run(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"]).stdout
    version = run([BUILD_DIR / "usersd", "--version"]).stdout.split()[-1]
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert "Package: usersd\n" in fields
    assert f"Version: {version}-" in fields
    assert f"Architecture: {arch}\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    names = {d.strip().split()[0] for d in depends.split(",")}
    # Computed by dpkg-shlibdeps from the binary's NEEDED entries.
    for lib in ("adduser", "libc6", "libstdc++6", "libsodium23", "libsqlite3-0", "libmongoc-1.0-0",
                "libbson-1.0-0", "libcpp-httplib0.11", "libfmt9"):
        assert lib in names, depends
    assert any(n.startswith("libspdlog1.10") for n in names), depends


def test_contents_and_conffiles(deb):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    modes = {}
    for line in listing.splitlines():
        parts = line.split()
        modes[parts[-1].lstrip(".")] = (parts[0], parts[1])
    for path in ("/usr/bin/usersd", "/etc/usersd/usersd.json", "/etc/usersd/usersd.env",
                 "/lib/systemd/system/usersd.service", "/etc/sysctl.d/60-usersd.conf",
                 "/usr/share/doc/usersd/copyright", "/usr/share/doc/usersd/changelog.Debian.gz"):
        assert path in modes, f"{path} not in the package:\n{listing}"
    assert modes["/etc/usersd/usersd.env"] == ("-rw-r-----", "root/root")
    assert modes["/usr/bin/usersd"][0] == "-rwxr-xr-x"
    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert sorted(conffiles) == ["/etc/sysctl.d/60-usersd.conf", "/etc/usersd/usersd.env", "/etc/usersd/usersd.json"]


def test_lintian_has_no_errors(deb):
    require("lintian", "lintian")
    r = run(["lintian", "--fail-on", "error", "--display-info", deb])
    print(r.stdout, r.stderr)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert r.returncode == 0 and not errors, f"lintian errors:\n{r.stdout}\n{r.stderr}"


def test_installed_files_user_and_modes(root):
    user = passwd_entry(root, "usersd")
    assert user is not None, "postinst did not create the usersd user"
    assert user[5] == "/var/lib/usersd" and user[6] == "/usr/sbin/nologin"
    assert int(user[2]) < 1000, "usersd must be a system user"
    gid = group_id(root, "usersd")
    assert gid is not None

    env = (root / "etc/usersd/usersd.env").stat()
    assert stat.S_IMODE(env.st_mode) == 0o640 and env.st_uid == 0 and env.st_gid == gid
    secret = root / "etc/usersd/jwt.secret"
    st = secret.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0 and st.st_gid == gid
    assert len(secret.read_text().strip()) >= 32
    state = (root / "var/lib/usersd").stat()
    assert stat.S_ISDIR(state.st_mode) and stat.S_IMODE(state.st_mode) == 0o750
    assert state.st_uid == int(user[2]) and state.st_gid == gid
    assert (root / "lib/systemd/system/usersd.service").is_file()
    wants = root / "etc/systemd/system/multi-user.target.wants/usersd.service"
    assert wants.is_symlink() and os.readlink(wants) == "/lib/systemd/system/usersd.service"
    status = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Status}", "usersd"]).stdout
    assert status == "install ok installed"


def test_installed_binary_runs(root):
    installed = run([root / "usr/bin/usersd", "--version"])
    built = run([BUILD_DIR / "usersd", "--version"])
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == built.stdout and installed.stdout.startswith("usersd ")
    sections = run(["readelf", "-S", "-W", root / "usr/bin/usersd"]).stdout
    assert ".symtab" not in sections, "the packaged binary is not stripped"

    config = root / "etc/usersd/usersd.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERSD_")}
    r = run([root / "usr/bin/usersd", "config", "check", "--config", config], env={**env, "USERSD_JWT_SECRET": SECRET})
    assert r.returncode == 0, r.stderr
    effective = json.loads(r.stdout)
    assert effective["env"] == "production"
    assert SECRET not in r.stdout
    # The secret postinst generated is accepted too (secret_file pointed at the scratch root).
    r = run([root / "usr/bin/usersd", "config", "check", "--config", config],
            env={**env, "USERSD_JWT_SECRET_FILE": str(root / "etc/usersd/jwt.secret")})
    assert r.returncode == 0, r.stderr


def unit_settings(path):
    settings = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def seconds(value):
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_unit_settings(root):
    unit = unit_settings(root / "lib/systemd/system/usersd.service")
    one = {k: v[-1] for k, v in unit.items()}
    assert one["Type"] == "notify"
    assert one["ExecStart"] == "/usr/bin/usersd start --foreground --config /etc/usersd/usersd.json"
    assert "reload" in one["ExecReload"]
    assert one["KillMode"] == "mixed"
    assert one["Restart"] == "on-failure"
    assert one["EnvironmentFile"] == "-/etc/usersd/usersd.env"
    assert one["User"] == "usersd" and one["StateDirectory"] == "usersd" and one["RuntimeDirectory"] == "usersd"
    assert seconds(one["WatchdogSec"]) > 0
    config = json.loads(run([root / "usr/bin/usersd", "config", "check", "--config", root / "etc/usersd/usersd.json"],
                            env={"PATH": os.environ.get("PATH", ""), "USERSD_JWT_SECRET": SECRET}).stdout)
    assert seconds(one["TimeoutStopSec"]) > config["drain_delay"] + config["graceful_timeout"]
    # No capabilities unless a port < 1024 is configured.
    if config["http"]["port"] >= 1024:
        assert one.get("AmbientCapabilities", "") == ""
        assert one.get("CapabilityBoundingSet", None) == ""


def systemd_root(root):
    """systemd-analyze --root wants the units usersd.service depends on: borrow the host's."""
    require("systemd-analyze", "systemd")
    units = root / "lib/systemd/system"
    for src in Path("/lib/systemd/system").iterdir():
        dst = units / src.name
        if not dst.exists() and not dst.is_symlink():
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
            elif src.is_file():
                shutil.copy2(src, dst)
    return root


def test_systemd_analyze_verify_is_clean(root):
    systemd_root(root)
    r = run(["systemd-analyze", "verify", f"--root={root}", UNIT])
    # A bad directive is only a warning (exit 0): clean means no output at all.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def test_systemd_analyze_security_exposure(root, capsys):
    systemd_root(root)
    r = run(["systemd-analyze", "security", "--offline=true", f"--root={root}", UNIT])
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for usersd\.service: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout
    exposure = float(m.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security usersd.service: exposure {exposure} {m.group(2)}")
    assert exposure <= MAX_EXPOSURE, r.stdout


def test_upgrade_keeps_local_secrets_and_purge_keeps_data(root, deb):
    env_file = root / "etc/usersd/usersd.env"
    env_file.write_text(env_file.read_text() + "USERSD_STORAGE_URL=sqlite:///var/lib/usersd/local.db\n")
    secret = (root / "etc/usersd/jwt.secret").read_text()
    (root / "var/lib/usersd/usersd.db").write_text("data")

    r = dpkg_install(root, deb)  # same version again: the upgrade path (postinst configure <old>)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "local.db" in env_file.read_text(), "dpkg overwrote the edited usersd.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert (root / "etc/usersd/jwt.secret").read_text() == secret
    # A secret removed on purpose (the AMI build does: fleets get theirs at deploy time) stays removed.
    (root / "etc/usersd/jwt.secret").unlink()
    r = dpkg_install(root, deb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / "etc/usersd/jwt.secret").exists(), "an upgrade re-created jwt.secret"

    r = run(["dpkg", f"--root={root}", "--log=/dev/null", "--force-script-chrootless", "--purge", "usersd"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / "usr/bin/usersd").exists()
    assert not (root / "etc/usersd").exists(), list((root / "etc/usersd").iterdir())
    assert not (root / "etc/systemd/system/multi-user.target.wants/usersd.service").exists()
    assert (root / "var/lib/usersd/usersd.db").read_text() == "data", "purge must keep the users database"
