"""Golden AMI (ami/) and CodeDeploy (deploy/codedeploy/) artifacts: lint, validate, and run what can
run here — provision.sh against a scratch root, the hooks against a real local usersd.

    build/venv/bin/python -m pytest -q tests/deploy/test_ami_and_codedeploy.py

Needs the Debian packages `shellcheck`, `packer` and `curl`, and build/usersd (or USERSD_BIN).
Missing tools fail the test with the reason; nothing is skipped.
"""
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AMI = REPO / "ami"
CODEDEPLOY = REPO / "deploy" / "codedeploy"
HOOKS = CODEDEPLOY / "hooks"
PROVISION = AMI / "provision.sh"
HOOK_NAMES = ["application_stop", "before_install", "after_install", "application_start", "validate_service"]
SCRIPTS = [PROVISION] + [HOOKS / f"{name}.sh" for name in HOOK_NAMES]

sys.path.insert(0, str(REPO / "tests" / "integration"))
from usersd_harness import Server  # noqa: E402


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is required for this test: apt-get install -y {tool}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env=None, timeout=60, **kw):
    return subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout, **kw)


def stub_bin(directory: Path, record: Path, names) -> Path:
    """Executables that only append their command line to `record` (and succeed)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        stub = directory / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{record}"\nexit 0\n')
        stub.chmod(0o755)
    return directory


# --- lint / validate -------------------------------------------------------------------------------
def test_scripts_exist_and_are_executable():
    for script in SCRIPTS:
        assert script.is_file(), script
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "set -euo pipefail" in text, script


def test_shellcheck_clean():
    shellcheck = need("shellcheck")
    done = run([shellcheck, "--severity=style", *SCRIPTS])
    assert done.returncode == 0, done.stdout + done.stderr


def test_packer_validate_and_fmt():
    packer = need("packer")
    template = AMI / "usersd.pkr.hcl"
    done = run([packer, "validate", "-syntax-only", template], cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run([packer, "fmt", "-check", AMI], cwd=REPO)
    assert done.returncode == 0, f"packer fmt -check {AMI} wants to reformat: {done.stdout}{done.stderr}"
    text = template.read_text()
    assert '"136693071363"' in text and '"debian-12-amd64-*"' in text


def test_appspec_parses():
    try:
        import yaml  # PyYAML (pinned in tests/integration/requirements.txt; schemathesis needs it too)
    except ImportError:
        pytest.fail("PyYAML is required: build/venv/bin/pip install pyyaml")
    spec = yaml.safe_load((CODEDEPLOY / "appspec.yml").read_text())
    assert spec["version"] == 0.0 and spec["os"] == "linux"
    assert spec["files"] == [{"source": "release/", "destination": "/opt/usersd/releases/"}]
    events = ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"]
    assert list(spec["hooks"]) == events
    for event, name in zip(events, HOOK_NAMES):
        (hook,) = spec["hooks"][event]
        assert hook["location"] == f"hooks/{name}.sh" and hook["runas"] == "root", hook
        assert 0 < hook["timeout"] <= 3600, hook
        assert (CODEDEPLOY / hook["location"]).is_file()


# --- provision.sh ------------------------------------------------------------------------------------
def host_state():
    paths = [Path("/etc/sysctl.d/60-usersd.conf"), Path("/usr/sbin/policy-rc.d"), Path("/etc/machine-id"),
             Path("/etc/systemd/system/usersd.service.d")]
    return {str(p): (p.exists(), p.stat().st_mtime_ns if p.exists() else None) for p in paths}


def test_provision_dry_run_against_scratch_root(tmp_path):
    root = tmp_path / "root"
    # A few things an image has, which provisioning must clean.
    for rel, content in {"etc/machine-id": "0123456789abcdef\n", "etc/ssh/ssh_host_ed25519_key": "k",
                         "etc/ssh/ssh_host_ed25519_key.pub": "k", "etc/ssh/sshd_config": "Port 22\n",
                         "var/log/syslog": "old log\n", "var/log/syslog.1": "x", "var/log/apt/history.log.gz": "x",
                         "root/.bash_history": "secret command\n", "home/admin/.bash_history": "x",
                         "var/lib/cloud/instances/i-0123/boot-finished": "x",
                         "var/lib/apt/lists/deb.debian.org_dists": "x", "etc/usersd/jwt.secret": "s"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    (root / "var/lib/dbus").mkdir(parents=True)
    record = tmp_path / "commands.log"
    stubs = stub_bin(tmp_path / "bin", record, ["apt-get", "systemctl", "sysctl", "cloud-init", "dpkg"])
    before = host_state()

    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
    done = run(["bash", PROVISION, "--root", root], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert host_state() == before, "provision.sh --root changed the host"
    assert not record.exists(), f"a dry run executed host commands:\n{record.read_text()}"
    for expected in ["would run: apt-get update", "would run: systemctl enable usersd.service",
                     "install /", "would run: cloud-init clean"]:
        assert expected in done.stdout, done.stdout

    packaged = (root / "etc/sysctl.d/60-usersd.conf").read_text()
    assert packaged == (AMI / "files/60-usersd.conf").read_text(), "the package's file is left as shipped"
    sysctl = packaged + (root / "etc/sysctl.d/61-usersd-ami.conf").read_text()
    settings = {}
    for line in sysctl.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            assert key not in settings, f"{key} set twice"
            settings[key] = value
    assert settings["net.ipv4.tcp_migrate_req"] == "1"
    assert settings["net.core.somaxconn"] == "4096"
    assert settings["net.ipv4.ip_local_port_range"] == "10240 65535"  # above usersd's port 3000
    assert settings["net.ipv4.tcp_fin_timeout"] == "30"
    assert sysctl.count("#") >= len(settings), "every setting is commented"

    assert (root / "etc/systemd/system/usersd.service.d/10-nofile.conf").read_text().count("LimitNOFILE=65536")
    assert (root / "etc/machine-id").read_text() == ""
    assert os.readlink(root / "var/lib/dbus/machine-id") == "/etc/machine-id"
    assert not list((root / "etc/ssh").glob("ssh_host_*")) and (root / "etc/ssh/sshd_config").exists()
    assert (root / "var/log/syslog").read_text() == ""
    assert not (root / "var/log/syslog.1").exists() and not (root / "var/log/apt/history.log.gz").exists()
    assert not (root / "root/.bash_history").exists() and not (root / "home/admin/.bash_history").exists()
    assert not (root / "var/lib/cloud/instances").exists()
    assert not list((root / "var/lib/apt/lists").iterdir())
    assert not (root / "etc/usersd/jwt.secret").exists()
    assert not (root / "usr/sbin/policy-rc.d").exists(), "the temporary policy-rc.d is removed on exit"


def test_provision_keeps_an_existing_unit_limit_and_refuses_bad_roots(tmp_path):
    root = tmp_path / "root"
    unit = root / "lib/systemd/system/usersd.service"
    unit.parent.mkdir(parents=True)
    shutil.copy(REPO / "systemd/usersd.service", unit)
    done = run(["bash", PROVISION, "--root", root])
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (root / "etc/systemd/system/usersd.service.d").exists(), "the unit sets LimitNOFILE already"
    assert run(["bash", PROVISION, "--root", tmp_path / "missing"]).returncode != 0
    refused = run(["bash", PROVISION, "--root", "/"])
    assert refused.returncode != 0 and "not a dry run" in refused.stderr
    assert run(["bash", PROVISION, "--bogus"]).returncode != 0


# --- CodeDeploy hooks --------------------------------------------------------------------------------
def test_validate_service_passes_against_a_running_usersd(tmp_path):
    need("curl")
    server = Server(tmp_path, config={"workers": 1}).start()
    try:
        env = dict(os.environ, USERSD_PORT=str(server.port), VALIDATE_TIMEOUT="20")
        started = time.monotonic()
        done = run([HOOKS / "validate_service.sh"], env=env, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        assert time.monotonic() - started < 5
        assert "healthy" in done.stdout and '"ok"' in done.stdout

        url_env = dict(os.environ, USERSD_HEALTHCHECK_URL=f"{server.base}/healthcheck", VALIDATE_TIMEOUT="10",
                       USERSD_PORT="1")  # the URL wins over the port
        done = run([HOOKS / "validate_service.sh"], env=url_env, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.stop()


def test_validate_service_fails_when_nothing_answers(tmp_path):
    need("curl")
    port = free_port()  # nothing listens there: a stopped usersd
    env = dict(os.environ, USERSD_PORT=str(port), VALIDATE_TIMEOUT="3")
    started = time.monotonic()
    done = run([HOOKS / "validate_service.sh"], env=env, timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert elapsed < 5.5, f"took {elapsed:.1f}s for VALIDATE_TIMEOUT=3"
    assert f"127.0.0.1:{port}/healthcheck not healthy within 3 s" in done.stderr, done.stderr


def test_validate_service_fails_on_a_stopped_usersd(tmp_path):
    need("curl")
    server = Server(tmp_path, config={"workers": 1}).start()
    port = server.port
    server.stop()
    done = run([HOOKS / "validate_service.sh"], env=dict(os.environ, USERSD_PORT=str(port), VALIDATE_TIMEOUT="2"))
    assert done.returncode != 0 and "FAILED" in done.stderr, done.stdout + done.stderr


def test_application_stop_when_nothing_is_installed(tmp_path):
    bash = shutil.which("bash")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    # No systemctl, no usersd.
    done = run([bash, HOOKS / "application_stop.sh"], env={"PATH": str(empty)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to stop" in done.stdout
    # systemctl present but no usersd unit, twice (idempotent).
    record = tmp_path / "calls.log"
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> "{record}"\nexit 1\n')
    (fake / "systemctl").chmod(0o755)
    for _ in range(2):
        done = run([bash, HOOKS / "application_stop.sh"], env={"PATH": str(fake)})
        assert done.returncode == 0 and "not installed" in done.stdout, done.stdout + done.stderr
    assert "systemctl stop" not in record.read_text()


def test_application_stop_leaves_a_running_usersd_running(tmp_path):
    record = tmp_path / "calls.log"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> "{record}"\nexit 0\n')
    (fake / "usersd").write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    done = run([shutil.which("bash"), HOOKS / "application_stop.sh"], env={"PATH": str(fake)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left running" in done.stdout
    assert "systemctl stop" not in record.read_text()


def test_before_install_prunes_old_releases(tmp_path):
    releases = tmp_path / "releases"
    releases.mkdir()
    now = time.time()
    for i, version in enumerate(["1.0.0", "1.1.0", "1.10.0", "1.2.0", "1.3.0"]):
        deb = releases / f"usersd_{version}_amd64.deb"
        deb.write_text(version)
        os.utime(deb, (now - 100 + i, now - 100 + i))  # deployed in this order
    (releases / "notes.txt").write_text("kept")
    env = dict(os.environ, USERSD_RELEASES_DIR=str(releases), MIN_FREE_MB="1")
    done = run([HOOKS / "before_install.sh"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in releases.iterdir()) == [
        "notes.txt", "usersd_1.10.0_amd64.deb", "usersd_1.2.0_amd64.deb", "usersd_1.3.0_amd64.deb"]
    # Not enough space fails the deployment with the reason.
    done = run([HOOKS / "before_install.sh"], env=dict(env, MIN_FREE_MB=str(10**12)))
    assert done.returncode != 0 and "MIN_FREE_MB" in done.stderr
