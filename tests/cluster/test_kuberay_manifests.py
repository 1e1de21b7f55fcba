"""KubeRay manifests validate against the CRD schemas of the KubeRay version we name.

The schemas are data in the repository (cluster/kuberay/crd-schemas/, with their source and
limits in the file's header). Every job module has a RayJob that runs it.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "cluster" / "kuberay"
SCHEMA_FILE = KUBERAY / "crd-schemas" / "kuberay-v1.4.2-subset.yaml"
NOT_CLUSTER_JOBS = {"fault_injection"}  # a fault-injection job for the dispatcher's tests


def schemas() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())["schemas"]


def manifests() -> list[Path]:
    return sorted(KUBERAY.glob("*.yaml"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_schema_file_names_its_version_and_source():
    data = yaml.safe_load(SCHEMA_FILE.read_text())
    assert data["kuberay_version"] == "v1.4.2" and data["api_version"] == "ray.io/v1"
    assert "github.com/ray-project/kuberay" in data["source"]
    assert set(data["schemas"]) == {"RayCluster", "RayJob", "RayService"}
    for schema in data["schemas"].values():
        jsonschema.Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("path", manifests(), ids=lambda path: path.name)
def test_manifest_validates_against_its_crd_schema(path):
    manifest = load(path)
    jsonschema.validate(manifest, schemas()[manifest["kind"]])


def test_there_is_one_of_each_kind():
    kinds = [load(path)["kind"] for path in manifests()]
    assert {"RayCluster", "RayJob", "RayService"} <= set(kinds)


@pytest.mark.parametrize(
    "path, change, complaint",
    [
        ("raycluster.yaml", lambda m: m["spec"]["workerGroupSpecs"][0].update(minReplica=0), "minReplica"),
        ("raycluster.yaml", lambda m: m["spec"]["headGroupSpec"].pop("template"), "template"),
        (
            "raycluster.yaml",
            lambda m: (
                m["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
                    memory="16 GB"
                )
            ),
            "16 GB",
        ),
        ("rayjob-summarize.yaml", lambda m: m["spec"].update(submissionMode="K8sMode"), "K8sMode"),
        ("rayservice.yaml", lambda m: m["spec"].update(serveConfig="{}"), "serveConfig"),
    ],
)  # fmt: skip
def test_schemas_reject_broken_manifests(path, change, complaint):
    """Guards the validation itself: a misspelt field, a missing one, a bad quantity, a bad enum."""
    manifest = copy.deepcopy(load(KUBERAY / path))
    change(manifest)
    with pytest.raises(jsonschema.ValidationError, match=complaint):
        jsonschema.validate(manifest, schemas()[manifest["kind"]])


def test_autoscaling_from_zero_workers():
    for path in ["raycluster.yaml", "rayjob-summarize.yaml"]:
        manifest = load(KUBERAY / path)
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        assert spec["enableInTreeAutoscaling"] is True
        assert all(group["minReplicas"] == 0 for group in spec["workerGroupSpecs"]), path


def test_every_job_module_has_a_rayjob():
    modules = {path.stem for path in (REPO / "jobs").glob("*.py") if path.stem != "__init__"} - NOT_CLUSTER_JOBS
    run_by_rayjobs = {
        shlex.split(load(path)["spec"]["entrypoint"])[2].removeprefix("jobs.")
        for path in manifests()
        if load(path)["kind"] == "RayJob"
    }
    assert modules <= run_by_rayjobs, f"jobs without a RayJob in cluster/kuberay: {sorted(modules - run_by_rayjobs)}"


def test_rayservice_serve_config_is_a_serve_deploy_config():
    serve_config = yaml.safe_load(load(KUBERAY / "rayservice.yaml")["spec"]["serveConfigV2"])
    (application,) = serve_config["applications"]
    assert application["import_path"].startswith("serve_apps.") and ":" in application["import_path"]
