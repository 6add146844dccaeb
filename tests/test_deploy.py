"""The deploy files users copy: loaded, cross-checked against each other and against the app."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapter.config import Config, from_env
from adapter.errors import ConfigError

from .conftest import make_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def manifests():
    out = {}
    for path in sorted((DEPLOY / "kubernetes" / "base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def k8s():
    return manifests()


@pytest.fixture(scope="module")
def container(k8s):
    [c] = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_every_manifest_but_the_example_secret_is_listed_in_the_kustomization(k8s):
    """`kubectl apply -k` must never overwrite a Secret made from a secret store with example values."""
    listed = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "kustomization.yaml").read_text())["resources"]
    files = sorted(
        p.name
        for p in (DEPLOY / "kubernetes" / "base").glob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    )
    assert sorted(listed) == files
    assert not any(
        yaml.safe_load((DEPLOY / "kubernetes" / "base" / name).read_text())["kind"] == "Secret" for name in listed
    )
    assert {"Deployment", "Service", "Secret", "PodDisruptionBudget", "NetworkPolicy"} <= set(k8s)


def test_the_example_secret_cannot_start_the_adapter(k8s, tmp_path):
    """Its values are placeholders, which the adapter refuses as secrets."""
    for key, value in k8s["Secret"]["stringData"].items():
        (tmp_path / key).write_text(value)
    env = {
        "SHARED_SECRET_FILE": str(tmp_path / "shared-secret"),
        "ALERT24_INTEGRATION_KEY_FILE": str(tmp_path / "integration-key"),
    }
    with pytest.raises(ConfigError) as err:
        make_config(SHARED_SECRET=None, ALERT24_INTEGRATION_KEY=None, ALERT24_API_KEY=None, **env)
    assert len(str(err.value).splitlines()) == 2 and "placeholder" in str(err.value)


def test_client_addresses_cannot_be_spoofed_and_stopping_pods_drain(k8s, container):
    env = {e["name"]: e.get("value") for e in container["env"]}
    trusted = env["FORWARDED_ALLOW_IPS"].split(",")
    assert "*" not in trusted and trusted == ["127.0.0.1", "::1"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and 1 <= int(pause[1]) <= 10
    grace = k8s["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    gunicorn_graceful = 20  # adapter/gunicorn_conf.py: graceful_timeout
    assert grace >= int(pause[1]) + gunicorn_graceful, "the pause and gunicorn's graceful stop fit the grace period"


def test_deployment_is_highly_available_and_unprivileged(k8s, container):
    spec = k8s["Deployment"]["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]


def test_probes_hit_endpoints_that_answer(k8s, container, client):
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["PORT"]) == port_names["http"]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in port_names
        assert client.get(get["path"]).status_code == 200


def test_secret_keys_feed_the_file_variables(k8s, container):
    """The base reads the two keys the events format needs, and no other: a variable naming a file the Secret lacks
    would stop the adapter (the API key comes with the api-key component, see test_deploy_kubernetes)."""
    secret_keys = set(k8s["Secret"]["stringData"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")["mountPath"]
    files = {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_FILE")}
    assert set(files) == {"SHARED_SECRET_FILE", "ALERT24_INTEGRATION_KEY_FILE"}
    assert {Path(v).name for v in files.values()} == secret_keys
    assert all(v.startswith(mount + "/") for v in files.values())


def test_environment_is_valid_adapter_configuration(container, tmp_path):
    """The base's settings with the example Secret's two keys and the shipped configuration file, in the events
    format, with no API key anywhere."""
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "ALERT24_API_KEY_FILE" not in env and "ALERT24_FORMAT" not in env
    for name in ("SHARED_SECRET_FILE", "ALERT24_INTEGRATION_KEY_FILE"):
        (tmp_path / name).write_text("x")
        env[name] = str(tmp_path / name)
    env["ADAPTER_CONFIG"] = str(DEPLOY / "kubernetes" / "base" / Path(env["ADAPTER_CONFIG"]).name)
    config = make_config(SHARED_SECRET=None, ALERT24_INTEGRATION_KEY=None, ALERT24_API_KEY=None, **env)
    assert isinstance(config, Config) and config.format == "events" and config.api_key is None
    assert config.resend_interval == 0 and not config.ledger_on, "per-pod ledgers prove nothing: none is kept"


def test_service_and_pdb_select_the_pods(k8s, container):
    pod_labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert k8s["Service"]["spec"]["type"] == "ClusterIP"
    assert k8s["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert k8s["Service"]["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # maxUnavailable, not minAvailable: a Deployment scaled to one replica can still be drained.
    assert k8s["PodDisruptionBudget"]["spec"] == {**k8s["PodDisruptionBudget"]["spec"], "maxUnavailable": 1}
    assert "minAvailable" not in k8s["PodDisruptionBudget"]["spec"]


def test_containerfile_matches_the_manifests(k8s):
    text = (ROOT / "Containerfile").read_text()
    uid = k8s["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert re.search(rf"^USER {uid}:{uid}$", text, re.M)
    assert "/healthz" in text and "HEALTHCHECK" in text
    assert re.search(r'^CMD \["gunicorn", "wsgi:app"\]$', text, re.M)


def test_containerfile_installs_the_lock_on_the_python_ci_tests():
    """The image is built as CI's production venv is: the hashed lock, then the package without dependencies."""
    text = (ROOT / "Containerfile").read_text()
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert re.search(rf"^FROM python:{re.escape(minor)}-slim-bookworm$", text, re.M)
    [install] = [line for line in text.splitlines() if "pip install" in line]
    assert install == ("RUN pip install --require-hashes -r requirements.txt && pip install --no-deps . && rm -rf /src")
    assert re.search(r"^COPY requirements\.txt ", text, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements.txt" in makefile
    assert "pip install --quiet --no-deps --force-reinstall ." in makefile


def test_the_lock_pins_and_hashes_every_package():
    """requirements.txt: every requirement pinned with == and carrying at least one --hash."""
    text = (ROOT / "requirements.txt").read_text()
    requirements = re.split(r"\n(?=[a-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
    packages = [r for r in requirements if r and not r.startswith("#")]
    assert len(packages) >= 10
    for requirement in packages:
        name = requirement.split()[0]
        assert re.fullmatch(r"[a-z0-9._-]+==[0-9][^ ;\\]*", name), name
        assert "--hash=sha256:" in requirement, name
    for direct in ("flask", "gunicorn", "gevent", "requests", "werkzeug", "psycopg", "psycopg-binary", "packaging"):
        assert re.search(rf"^{direct}==", text, re.M), direct


def test_procfile_runs_gunicorn():
    assert (ROOT / "Procfile").read_text().strip() == "web: gunicorn wsgi:app"


def test_nginx_speaks_tls_only_and_exposes_only_the_webhook_and_liveness():
    site = (DEPLOY / "nginx" / "alert24-adapter.conf").read_text()
    listens = re.findall(r"^\s*listen\s+([^;]+);", site, re.M)
    assert listens and all(listen.split()[-1] == "ssl" for listen in listens), "no plain-HTTP server"
    assert re.search(r"^\s*ssl_certificate\s+\S+;", site, re.M) and re.search(r"^\s*ssl_certificate_key\s", site, re.M)
    proxied = re.findall(r"location\s+(=\s+)?(\S+)\s*\{\s*proxy_pass", site)
    assert sorted(path for _, path in proxied) == ["/alertmanager", "/alertmanager/", "/healthz"]
    assert re.search(r"location / \{[^}]*return 404", site)


def test_nginx_limits_agree_with_the_adapter():
    site = (DEPLOY / "nginx" / "alert24-adapter.conf").read_text()
    defaults = Config()
    body = re.search(r"client_max_body_size (\d+)m;", site)
    # Above the adapter's limit, so that the adapter refuses an oversized group itself, loudly; but bounded.
    assert defaults.max_body_bytes < int(body.group(1)) * 1024 * 1024 <= 4 * defaults.max_body_bytes
    read = re.search(r"proxy_read_timeout (\d+)s;", site)
    assert int(read.group(1)) > defaults.time_budget + defaults.connect_timeout
    assert "proxy_next_upstream off;" in site


UNIT = DEPLOY / "systemd" / "alert24-adapter.service"


def unit_settings():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize(
    "key, value",
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "4"),
        ("User", "alert24"),
        ("EnvironmentFile", "/etc/alert24-adapter/alert24-adapter.env"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("SystemCallErrorNumber", "EPERM"),
        ("PrivateUsers", "yes"),
        ("ProcSubset", "pid"),
        ("ProtectProc", "invisible"),
        ("RemoveIPC", "yes"),
        ("CapabilityBoundingSet", ""),
    ],
)
def test_systemd_unit_settings(key, value):
    assert value in unit_settings()[key]


def test_systemd_secrets_come_as_credentials_and_the_api_key_is_optional():
    """A LoadCredential= whose file is missing stops the unit: the optional API key's lines start commented."""
    settings = unit_settings()
    credentials = {c.split(":")[0] for c in settings["LoadCredential"]}
    assert credentials == {"shared-secret", "integration-key"}
    env = " ".join(settings["Environment"])
    for name in ("SHARED_SECRET_FILE", "ALERT24_INTEGRATION_KEY_FILE"):
        assert f"{name}=%d/" in env
    text = UNIT.read_text()
    assert "# LoadCredential=api-key:/etc/alert24-adapter/credentials/api-key" in text
    assert "# Environment=ALERT24_API_KEY_FILE=%d/api-key" in text


def test_systemd_analyze_verify(tmp_path):
    exe = shutil.which("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze is not on this machine")
    unit = tmp_path / "alert24-adapter.service"
    # verify checks that ExecStart exists; point it at a binary this machine has.
    unit.write_text(UNIT.read_text().replace("/opt/alert24-adapter/bin/alert24-adapter", shutil.which("true")))
    result = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if "alert24-adapter.service" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_systemd_keeps_the_ledger_in_its_state_directory():
    settings = unit_settings()
    assert settings["StateDirectory"] == ["alert24-adapter"]
    config = make_config(ALERTMANAGER_URL="http://127.0.0.1:9093", STATE_DIRECTORY="/var/lib/alert24-adapter")
    assert config.ledger_url == "sqlite:///var/lib/alert24-adapter/ledger.db"


def test_container_keeps_the_ledger_in_a_volume_and_can_use_postgresql():
    text = (ROOT / "Containerfile").read_text()
    state = re.search(r"^ENV STATE_DIRECTORY=(\S+)$", text, re.M).group(1)
    assert re.search(rf"^VOLUME {re.escape(state)}$", text, re.M)
    assert re.search(rf"install -d -o 10001 -g 10001 -m 0700 {re.escape(state)}$", text, re.M)
    assert re.search(r"^psycopg-binary==", (ROOT / "requirements.txt").read_text(), re.M), "the lock has the extra"


def test_shipped_gunicorn_settings_patch_for_gevent_before_the_adapter_loads(tmp_path):
    """Read as gunicorn reads it, in a fresh interpreter: gevent workers, the standard library patched first."""
    probe = (
        "import runpy, sys; settings = runpy.run_path('gunicorn.conf.py'); "
        "from gevent import monkey; "
        "assert settings['worker_class'] == 'gevent', settings['worker_class']; "
        "assert monkey.is_module_patched('socket') and monkey.is_module_patched('ssl'); "
        "assert 'requests' not in sys.modules and 'adapter.app' not in sys.modules; "
        "import threading, adapter.alert24 as a; "
        "assert type(a._semaphore(2)).__module__.startswith('gevent'); print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k != "GUNICORN_WORKER_CLASS"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_gthread_remains_a_choice_and_patches_nothing(tmp_path):
    probe = (
        "import runpy; settings = runpy.run_path('gunicorn.conf.py'); "
        "from gevent import monkey; "
        "assert settings['worker_class'] == 'gthread' and not monkey.is_module_patched('socket'); print('ok')"
    )
    env = {**os.environ, "GUNICORN_WORKER_CLASS": "gthread", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_ledger_has_a_writable_home_in_the_pod(k8s, container):
    """The root file system is read-only: the default SQLite ledger lives on a volume at STATE_DIRECTORY."""
    text = (ROOT / "Containerfile").read_text()
    state = re.search(r"^ENV STATE_DIRECTORY=(\S+)$", text, re.M).group(1)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert state in mounts and "emptyDir" in volumes[mounts[state]]


def test_systemd_open_files_fit_a_worker_at_its_bounds():
    """systemd's default soft limit (1,024) is below what one gevent worker may hold: its webhooks and its calls."""
    worker_connections = 1000  # adapter/gunicorn_conf.py: GUNICORN_WORKER_CONNECTIONS's default
    [limit] = unit_settings()["LimitNOFILE"]
    assert int(limit) >= worker_connections + Config().max_in_flight + 64


def install_block() -> list[str]:
    """The install commands in the unit's leading comments."""
    lines = []
    for line in UNIT.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            lines.append(line[4:])
    return lines


def test_systemd_install_block_runs(tmp_path):
    """The file-placing steps of the install block, run under a scratch root: each `install` has one destination,
    the credentials directory exists before a secret is written into it, and the secret is readable by root alone."""
    block = install_block()
    assert not any("{" in line for line in block), "a brace expands to several destinations"
    runnable = [
        line for line in block if line.startswith("install ") or (line.startswith("(umask 077;") and "openssl" in line)
    ]
    assert len(runnable) == 5, runnable
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on this machine")
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for line in runnable:
        command = line.replace(" /etc/", f" {root}/etc/").replace(" > /etc/", f" > {root}/etc/")
        assert str(root) in command, command
        result = subprocess.run(["bash", "-ec", command], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
    etc = root / "etc" / "alert24-adapter"
    assert (etc / "credentials").stat().st_mode & 0o777 == 0o700
    secret = etc / "credentials" / "shared-secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and re.fullmatch(r"[0-9a-f]{64}\n", secret.read_text())
    assert (etc / "alert24-adapter.env").read_text() == (DEPLOY / "systemd" / "alert24-adapter.env").read_text()
    assert (root / "etc" / "systemd" / "system" / "alert24-adapter.service").read_text() == UNIT.read_text()
    # The paths the unit reads are the paths the block writes.
    settings = unit_settings()
    written = {"/etc/alert24-adapter/credentials/shared-secret", "/etc/alert24-adapter/credentials/integration-key"}
    assert {c.split(":", 1)[1] for c in settings["LoadCredential"]} == written
    assert any("credentials/integration-key" in line for line in block)


def test_systemd_analyze_security_rates_the_unit_well(tmp_path):
    exe = shutil.which("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze is not on this machine")
    unit = tmp_path / "alert24-adapter.service"
    unit.write_text(UNIT.read_text().replace("/opt/alert24-adapter/bin/alert24-adapter", shutil.which("true")))
    result = subprocess.run(
        [exe, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
    )
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline")
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert exposure and float(exposure.group(1)) <= 2.0, result.stdout[-2000:] + result.stderr


def nginx_site() -> str:
    return (DEPLOY / "nginx" / "alert24-adapter.conf").read_text()


def test_nginx_follows_mozillas_intermediate_tls_profile():
    site = nginx_site()

    def directive(name):
        [value] = re.findall(rf"^\s*{name}\s+([^;]+);", site, re.M)
        return value

    assert directive("ssl_protocols").split() == ["TLSv1.2", "TLSv1.3"]
    ciphers = directive("ssl_ciphers").split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20-POLY1305" in c) for c in ciphers)
    assert directive("ssl_prefer_server_ciphers") == "off"
    assert directive("ssl_session_tickets") == "off"
    assert directive("server_tokens") == "off"


def test_nginx_logs_the_request_id_it_passes_on():
    site = nginx_site()
    [(variable, cases)] = re.findall(r"map \$http_x_request_id \$(\w+) \{(.*?)\n\}", site, re.S)
    [(name, log_format)] = re.findall(r"^log_format (\w+) ((?:'[^']*'\s*)+);", site, re.M)
    assert f"${variable}" in log_format
    assert re.search(rf"^\s*access_log \S+ {name};", site, re.M)
    assert re.search(rf"^\s*proxy_set_header X-Request-Id \${variable};", site, re.M)
    # A client's id goes on only where the adapter would keep it too; otherwise nginx's own $request_id.
    [pattern] = re.findall(r'"~(\^[^"]+\$)" \$http_x_request_id;', cases)
    assert re.search(r"default \$request_id;", cases)
    from adapter.views import _REQUEST_ID

    for candidate in ["abc-123", "a" * 128, "a" * 129, "x y", "id;drop", "trace/1+2=3:@._-", ""]:
        assert bool(re.fullmatch(pattern.strip("^$"), candidate)) == bool(_REQUEST_ID.fullmatch(candidate)), candidate


@pytest.mark.parametrize("path", ["/history", "/status"])
def test_nginx_keeps_the_operators_pages_on_the_host(path):
    """Proxied, but only to this host until someone adds their network above `deny all`."""
    block = re.search(rf"location = {path} \{{([^}}]*)\}}", nginx_site())
    rules = re.findall(r"^\s*(allow|deny)\s+([^;]+);", block.group(1), re.M)
    assert rules == [("allow", "127.0.0.1"), ("allow", "::1"), ("deny", "all")]
    assert "proxy_pass http://alert24_adapter;" in block.group(1)


def test_containerfile_carries_oci_labels_that_match_the_package():
    text = (ROOT / "Containerfile").read_text()
    labels = dict(re.findall(r'org\.opencontainers\.image\.([a-z.]+)="([^"]*)"', text))
    setup = (ROOT / "setup.cfg").read_text()
    assert labels["title"] == "alert24-adapter"
    assert labels["description"] == re.search(r"^description = (.+)$", setup, re.M).group(1)
    assert labels["licenses"] == re.search(r"^license = (.+)$", setup, re.M).group(1) == "Apache-2.0"
    assert labels["source"].startswith("https://") and labels["version"] == "${VERSION}"
    from adapter.version import __version__

    assert re.search(rf"^ARG VERSION={re.escape(__version__)}$", text, re.M), "the default is the package's version"
    # podman's default OCI format has no HEALTHCHECK: the build line keeps the Docker format.
    assert "--format docker" in text


def test_the_license_is_the_apache_license():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_systemd_environment_is_valid_adapter_configuration(tmp_path):
    """The env file and the unit's Environment= lines, with the credentials systemd hands over, as the service
    sees them: a valid configuration, with the ledger on in the state directory."""
    env = {}
    for line in (DEPLOY / "systemd" / "alert24-adapter.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    for assignments in unit_settings()["Environment"]:
        for assignment in assignments.split():
            name, _, value = assignment.partition("=")
            env[name] = value.replace("%d", str(tmp_path / "credentials")).replace("%t", str(tmp_path / "run"))
    (tmp_path / "credentials").mkdir()
    for credential in unit_settings()["LoadCredential"]:
        (tmp_path / "credentials" / credential.split(":")[0]).write_text("a-real-looking-value-42\n")
    env["STATE_DIRECTORY"] = str(tmp_path / "state")
    config = from_env(env)
    assert config.ledger_on and config.ledger_url == f"sqlite://{tmp_path}/state/ledger.db"
    assert config.resend_interval > 0
