"""Structure of the container build: the Dockerfiles' base and wheelhouse, the podman scripts.

The image itself is built and run by ``docker/ci-check.sh`` (a step of ``.ci/run``); these
tests check, without podman, what that step and users rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SCRIPTS = ["build-offline.sh", "run-local.sh", "ci-check.sh", "podman-env.sh"]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_take_a_base_install_into_a_venv_and_use_a_wheelhouse(name):
    text = (DOCKER / name).read_text()
    arg = text.index("ARG BASE_IMAGE=python:3.11-slim-bookworm")  # unchanged for registry users
    assert arg < text.index("FROM ${BASE_IMAGE}")
    assert "python3 -m venv /opt/venv" in text and "PATH=/opt/venv/bin:$PATH" in text
    mounts = re.findall(r"RUN --mount=type=bind,source=docker/wheelhouse,target=(\S+)", text)
    assert len(mounts) == 2, "torch and the project both install from the wheelhouse"
    assert text.count("pip install --no-index --find-links /tmp/wheelhouse") == 2
    assert "--constraint constraints.txt" in text
    assert "USER 10001" in text


def test_the_wheelhouse_folder_exists_in_a_fresh_clone_and_keeps_wheels_out_of_git():
    ignore = (DOCKER / "wheelhouse" / ".gitignore").read_text().split()
    assert ignore[0] == "*" and "!README.md" in ignore
    tracked = subprocess.run(
        ["git", "ls-files", "docker/wheelhouse"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert "docker/wheelhouse/README.md" in tracked
    assert not [t for t in tracked if t.endswith(".whl")]
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_parse(name):
    res = subprocess.run(["bash", "-n", str(DOCKER / name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if name != "podman-env.sh":  # sourced, not run
        assert os.access(DOCKER / name, os.X_OK), f"docker/{name} is not executable"


def test_fixed_names_image_and_work_mount():
    build = (DOCKER / "build-offline.sh").read_text()
    run = (DOCKER / "run-local.sh").read_text()
    assert 'IMAGE="${CMCL_IMAGE:-localhost/cmcl:cpu}"' in build
    assert 'IMAGE="${CMCL_IMAGE:-localhost/cmcl:cpu}"' in run
    assert '-v "$PWD/container-work:/work:U"' in run and "--pull=never" in run
    assert "--pull=never" in build and "debootstrap --variant=minbase" in build


def test_podman_settings_use_runc_and_ulimits_within_the_hard_limits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CONTAINERS_CONF"}
    env["CMCL_BUILD_DIR"] = str(tmp_path)
    script = f'. "{DOCKER / "podman-env.sh"}" && echo "$CONTAINERS_CONF" && ulimit -Hn'
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    conf = Path(out[0]).read_text()
    assert out[0] == str(tmp_path / "containers.conf")
    assert 'runtime = "runc"' in conf
    nofile = re.search(r'"nofile=(\d+):(\d+)"', conf)
    assert nofile and nofile.group(1) == nofile.group(2)
    if out[1] != "unlimited":
        assert int(nofile.group(2)) <= int(out[1])


def test_an_existing_containers_conf_wins(tmp_path):
    env = {**os.environ, "CONTAINERS_CONF": "/etc/mine.conf", "CMCL_BUILD_DIR": str(tmp_path)}
    script = f'. "{DOCKER / "podman-env.sh"}" && echo "$CONTAINERS_CONF"'
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert res.stdout.strip() == "/etc/mine.conf"
    assert not (tmp_path / "containers.conf").exists()


def test_ci_installs_podman_and_runs_the_container_check():
    ci = (ROOT / ".ci" / "run").read_text()
    block = ci[ci.index("# ---- containers") : ci.index("# ---- end containers")]
    assert block.index("apt-get update") < block.index("podman buildah runc debootstrap")
    assert "docker/ci-check.sh" in block
    check = (DOCKER / "ci-check.sh").read_text()
    assert "demo --workdir /work/ci/demo" in check and "/dicom:ro" in check


def test_build_script_explains_missing_tools(tmp_path):
    bin_dir = tmp_path / "bin"  # the basic tools only: no podman, no debootstrap
    bin_dir.mkdir()
    for tool in ("dirname", "mkdir", "cat", "date"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": str(bin_dir), "CMCL_BUILD_DIR": str(tmp_path / "build")}
    res = subprocess.run(
        ["/bin/bash", str(DOCKER / "build-offline.sh")], env=env, capture_output=True, text=True
    )
    assert res.returncode == 2, res.stderr
    assert "apt-get install -y podman buildah runc debootstrap" in res.stderr
