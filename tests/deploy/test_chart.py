"""The Helm chart, checked by Helm itself (PyPI's helm-sdkpy): lint with the default and
the production-like values, render (install into a fake cluster on loopback) and look at
what Helm would apply, the chart's refusals, and the values schema."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from tests.deploy.chart_tools import (
    CHART,
    PRODUCTION_VALUES,
    ROOT,
    Rendered,
    RenderError,
    lint,
    render_many,
    require_helm,
    with_values_file,
)

DO_TOKEN = "dop_v1_" + "c4a7" * 16
REPOSITORY = "registry.example.com/acme-delegate"
TOKEN_ONLY: dict[str, Any] = {"digitalocean": {"token": DO_TOKEN}}
POSTGRES_URL = "postgresql://acme:pa55word@postgresql.db.svc:5432/acme?sslmode=require"
CONFIG_ENV = {
    "delegationDomain": "ACME_DELEGATE_DELEGATION_DOMAIN",
    "zones": "ACME_DELEGATE_ZONES",
    "registration": "ACME_DELEGATE_REGISTRATION",
    "trustedProxies": "ACME_DELEGATE_TRUSTED_PROXIES",
    "publicUrl": "ACME_DELEGATE_PUBLIC_URL",
    "txtTtl": "ACME_DELEGATE_TXT_TTL",
    "recordLifetime": "ACME_DELEGATE_RECORD_LIFETIME",
    "reconcileInterval": "ACME_DELEGATE_RECONCILE_INTERVAL",
    "maxValuesPerName": "ACME_DELEGATE_MAX_VALUES_PER_NAME",
    "logLevel": "ACME_DELEGATE_LOG_LEVEL",
    "doApiUrl": "ACME_DELEGATE_DO_API_URL",
    "doTimeout": "ACME_DELEGATE_DO_TIMEOUT",
    "waitForDns": "ACME_DELEGATE_WAIT_FOR_DNS",
    "nameservers": "ACME_DELEGATE_NAMESERVERS",
    "newValuesPerHour": "ACME_DELEGATE_NEW_VALUES_PER_HOUR",
}

# Each scenario: values given to `helm install` (as --values would).
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": TOKEN_ONLY,
    "postgres-url-2": {
        "replicaCount": 2,
        "digitalocean": {"token": DO_TOKEN},
        "admin": {"token": "admin-" + "9" * 40},
        "registrationToken": {"token": "register-" + "7" * 40},
        "database": {"url": POSTGRES_URL},
        "config": {"registration": "open", "delegationDomain": "acme.example.org",
                   "zones": ["example.com", "example.org"], "txtTtl": 60,
                   "recordLifetime": 1_000_000, "doApiUrl": "http://do.internal:8080",
                   "waitForDns": 45, "nameservers": ["10.0.0.53:53", "[fd00::53]:5353"],
                   "newValuesPerHour": 12},
    },
    "postgres-secret-1": {
        "digitalocean": {"existingSecret": "do", "existingSecretKey": "api-token"},
        "database": {"existingSecret": "db", "existingSecretKey": "url"},
        "networkPolicy": {"enabled": True},
    },
    "no-pdb-when-disabled": {
        "replicaCount": 3, "digitalocean": {"token": DO_TOKEN},
        "database": {"url": POSTGRES_URL}, "podDisruptionBudget": {"enabled": False},
    },
    "sqlite-without-volume": {"digitalocean": {"token": DO_TOKEN},
                              "persistence": {"enabled": False},
                              "networkPolicy": {"enabled": True}},
    "operations": {
        "digitalocean": {"token": DO_TOKEN},
        "serviceMonitor": {
            "enabled": True, "namespace": "monitoring", "labels": {"release": "kps"},
            "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                             "targetLabel": "node"}],
            "metricRelabelings": [{"action": "drop", "regex": "python_gc_.*",
                                   "sourceLabels": ["__name__"]}]},
        "prometheusRule": {"enabled": True, "labels": {"release": "kps"},
                           "additionalLabels": {"team": "platform"}},
        "serviceAccount": {"annotations": {"iam.example.com/role": "acme-delegate"}},
        "extraEnv": [{"name": "ACME_DELEGATE_API_DOCS", "value": "false"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}],
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/owner": "platform"},
    },
    "existing-service-account": {
        "digitalocean": {"token": DO_TOKEN}, "database": {"url": POSTGRES_URL},
        "serviceAccount": {"create": False, "name": "shared"},
    },
    "ingress": {
        "digitalocean": {"token": DO_TOKEN},
        "ingress": {"enabled": True, "tls": [{"secretName": "tls",
                                              "hosts": ["acme-delegate.example.net"]}]},
    },
}


def with_image(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the required image.repository (unless they set it themselves)."""
    return {**values, "image": {"repository": REPOSITORY, **values.get("image", {})}}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    require_helm()
    names = list(SCENARIOS)
    results = render_many([with_image(SCENARIOS[name]) for name in names])
    out: dict[str, Rendered] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, RenderError):
            pytest.fail(f"scenario {name} did not render: {result}")
        out[name] = result
    # The production-like values file, applied by Helm (see with_values_file).
    harness = with_values_file(PRODUCTION_VALUES, tmp_path_factory.mktemp("production"))
    [production] = render_many([None], chart=harness)
    if isinstance(production, RenderError):
        pytest.fail(f"ci/production-values.yaml did not render: {production}")
    out["production"] = production
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def server(r: Rendered) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = r.one("Deployment")
    spec = pod_spec(deployment)
    [container] = spec["containers"]
    return deployment, spec, container


def secret_file(spec: dict[str, Any], container: dict[str, Any], path: str
                ) -> tuple[str, str]:
    """(Secret name, key) behind a file path, checking that it is mounted read-only."""
    directory, _, filename = path.rpartition("/")
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert mount.get("readOnly") is True, mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    [item] = volume["secret"]["items"]
    assert item["path"] == filename
    return volume["secret"]["secretName"], item["key"]


# --- lint --------------------------------------------------------------------------


def test_lint_default_values(tmp_path: Path) -> None:
    """The defaults lack only the image, which no public registry carries: the schema
    says so; with it, lint is clean."""
    require_helm()
    bare = lint(CHART, tmp_path / "bare")
    # helm-sdkpy's report drops the texts: the schema fails values.yaml (and so the
    # templates); test_schema_rejects shows the message names /image/repository.
    assert {m["Path"] for m in bare.messages if m["Severity"] >= 2} == {
        "values.yaml", "templates/"}, bare
    image_only = tmp_path / "image.yaml"
    image_only.write_text(f"image:\n  repository: {REPOSITORY}\n")
    report = lint(with_values_file(image_only, tmp_path / "chart"), tmp_path / "lint")
    assert report.problems() == []


def test_lint_production_values(tmp_path: Path) -> None:
    require_helm()
    report = lint(with_values_file(PRODUCTION_VALUES, tmp_path / "chart"), tmp_path / "lint")
    assert report.problems() == []


def test_lint_through_the_values_harness_does_see_the_values(tmp_path: Path) -> None:
    """Otherwise the production lint above would pass whatever the file says."""
    require_helm()
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("config:\n  registration: sometimes\n")
    report = lint(with_values_file(bad, tmp_path / "chart"), tmp_path / "lint")
    assert report.problems(), report.messages


# --- what Helm applies ---------------------------------------------------------------


@pytest.mark.parametrize("name", [*SCENARIOS, "production"])
def test_pods_are_hardened(rendered: dict[str, Rendered], name: str) -> None:
    r = rendered[name]
    workloads = r.of_kind("Deployment") + r.of_kind("Job")
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] == 10001
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["resources"]["requests"]
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, "a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", [*SCENARIOS, "production"])
def test_server_container(rendered: dict[str, Rendered], name: str) -> None:
    _, _, container = server(rendered[name])
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # Liveness on the process only (a database blip must not restart every replica at
    # once), readiness on the database; startup waits for the process.
    paths = {probe: container[probe]["httpGet"] for probe in
             ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": {"path": "/livez", "port": "http"},
                     "livenessProbe": {"path": "/livez", "port": "http"},
                     "readinessProbe": {"path": "/readyz", "port": "http"}}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/data" in mounts


def test_default_is_one_replica_on_sqlite_with_a_volume(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    deployment, spec, container = server(r)
    assert deployment["spec"]["replicas"] == 1
    # One pod at a time holds the ReadWriteOnce volume.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = env_of(container)
    assert env["ACME_DELEGATE_DATABASE_URL"]["value"] == "sqlite:////data/acme-delegate.sqlite3"
    [data] = [v for v in spec["volumes"] if v["name"] == "data"]
    pvc = r.one("PersistentVolumeClaim")
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert spec["securityContext"]["fsGroup"] == 10001  # the volume is writable by 10001
    # SQLite: no migration Job (serve migrates; a Job could not share the volume), no PDB.
    assert r.of_kind("Job") == []
    assert r.of_kind("PodDisruptionBudget") == []
    for kind in ("Ingress", "NetworkPolicy", "ServiceMonitor"):
        assert r.of_kind(kind) == [], kind


def test_token_is_a_read_only_file_never_an_env_value(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    deployment, spec, container = server(r)
    env = env_of(container)
    assert "ACME_DELEGATE_DO_TOKEN" not in env
    assert "ACME_DELEGATE_ADMIN_TOKEN_FILE" not in env  # no admin token given: API off
    path = env["ACME_DELEGATE_DO_TOKEN_FILE"]["value"]
    name, key = secret_file(spec, container, path)
    secret = r.one("Secret")
    assert secret["metadata"]["name"] == name
    assert base64.b64decode(secret["data"][key]).decode() == DO_TOKEN
    assert DO_TOKEN not in json.dumps(deployment)
    # The token is read once at start: a new one in the chart's Secret rolls the pods.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


def test_config_values_become_settings(rendered: dict[str, Rendered]) -> None:
    values = SCENARIOS["postgres-url-2"]
    _, spec, container = server(rendered["postgres-url-2"])
    env = env_of(container)
    expected = {
        "ACME_DELEGATE_REGISTRATION": "open",
        "ACME_DELEGATE_DELEGATION_DOMAIN": "acme.example.org",
        "ACME_DELEGATE_ZONES": "example.com,example.org",
        "ACME_DELEGATE_TXT_TTL": "60",
        "ACME_DELEGATE_RECORD_LIFETIME": "1000000",  # not 1e+06
        "ACME_DELEGATE_RECONCILE_INTERVAL": "300",
        "ACME_DELEGATE_MAX_VALUES_PER_NAME": "2",
        "ACME_DELEGATE_LOG_LEVEL": "INFO",
        "ACME_DELEGATE_DO_API_URL": "http://do.internal:8080",
        "ACME_DELEGATE_DO_TIMEOUT": "10",
        "ACME_DELEGATE_WAIT_FOR_DNS": "45",
        "ACME_DELEGATE_NAMESERVERS": "10.0.0.53:53,[fd00::53]:5353",
        "ACME_DELEGATE_NEW_VALUES_PER_HOUR": "12",
    }
    assert {k: env[k].get("value") for k in expected} == expected
    # ...and the service reads them as meant.
    settings = Settings.model_validate({k.removeprefix("ACME_DELEGATE_").lower(): v
                                        for k, v in expected.items()})
    assert settings.wait_for_dns == 45 and settings.new_values_per_hour == 12
    assert [str(n) for n in settings.nameservers] == ["10.0.0.53:53", "[fd00::53]:5353"]
    admin_secret, admin_key = secret_file(spec, container,
                                          env["ACME_DELEGATE_ADMIN_TOKEN_FILE"]["value"])
    assert (admin_secret, admin_key) == ("acme-delegate", "admin-token")
    registration = secret_file(spec, container,
                               env["ACME_DELEGATE_REGISTRATION_TOKEN_FILE"]["value"])
    assert registration == ("acme-delegate", "registration-token")
    secret = next(x for x in rendered["postgres-url-2"].of_kind("Secret")
                  if x["metadata"]["name"] == "acme-delegate")
    assert base64.b64decode(secret["data"]["registration-token"]).decode() == \
        values["registrationToken"]["token"]
    for token in (values["admin"]["token"], values["registrationToken"]["token"]):
        assert token not in json.dumps(rendered["postgres-url-2"].one("Deployment"))


def test_every_config_value_maps_to_a_documented_setting() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["config"]["properties"]) == set(CONFIG_ENV)
    template = (CHART / "templates" / "deployment.yaml").read_text()
    readme = (ROOT / "README.md").read_text()
    for key, variable in CONFIG_ENV.items():
        assert f"name: {variable}" in template, key
        assert f"`{variable.removeprefix('ACME_DELEGATE_')}`" in readme, variable


def test_several_replicas_on_postgresql_from_values(rendered: dict[str, Rendered]) -> None:
    r = rendered["postgres-url-2"]
    deployment, spec, container = server(r)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    url_ref = env_of(container)["ACME_DELEGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert url_ref == {"name": "acme-delegate", "key": "database-url"}
    secret = next(s for s in r.of_kind("Secret") if s["metadata"]["name"] == "acme-delegate")
    assert base64.b64decode(secret["data"]["database-url"]).decode() == POSTGRES_URL
    assert POSTGRES_URL not in json.dumps(deployment)
    assert r.of_kind("PersistentVolumeClaim") == []
    [data] = [v for v in spec["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "emptyDir": {}}
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_migration_hook_job(rendered: dict[str, Rendered]) -> None:
    r = rendered["postgres-url-2"]
    job = r.one("Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    [container] = spec["containers"]
    assert container["args"] == ["migrate"]
    _, server_spec, server_container = server(r)
    assert container["image"] == server_container["image"]
    assert spec["securityContext"] == server_spec["securityContext"]
    assert container["securityContext"] == server_container["securityContext"]
    # The release's Secret does not exist before the first install: the hook reads the
    # URL from a hook Secret made just before it (lower weight).
    ref = env_of(container)["ACME_DELEGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    [hook_secret] = [s for s in r.hooks() if s["kind"] == "Secret"]
    assert ref == {"name": hook_secret["metadata"]["name"], "key": "database-url"}
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"])
    assert base64.b64decode(hook_secret["data"]["database-url"]).decode() == POSTGRES_URL
    # Hooks ran first: Helm created them before the Deployment.
    kinds = [o["kind"] for o in r.objects]
    assert kinds.index("Job") < kinds.index("Deployment")


def test_existing_secrets(rendered: dict[str, Rendered]) -> None:
    r = rendered["postgres-secret-1"]
    _, spec, container = server(r)
    env = env_of(container)
    assert secret_file(spec, container, env["ACME_DELEGATE_DO_TOKEN_FILE"]["value"]) == (
        "do", "api-token")
    assert env["ACME_DELEGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "db", "key": "url"}
    assert r.of_kind("Secret") == []  # nothing to create: every secret is the user's
    job = r.one("Job")
    [job_container] = pod_spec(job)["containers"]
    assert env_of(job_container)["ACME_DELEGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "db", "key": "url"}
    assert r.of_kind("PodDisruptionBudget") == []  # one replica
    assert "checksum/secret" not in (
        r.one("Deployment")["spec"]["template"]["metadata"].get("annotations") or {})


def test_pdb_only_when_enabled_and_replicas_above_one(rendered: dict[str, Rendered]) -> None:
    assert rendered["no-pdb-when-disabled"].of_kind("PodDisruptionBudget") == []
    assert len(rendered["postgres-url-2"].of_kind("PodDisruptionBudget")) == 1
    assert rendered["default"].of_kind("PodDisruptionBudget") == []


def test_sqlite_without_volume_uses_empty_dir(rendered: dict[str, Rendered]) -> None:
    r = rendered["sqlite-without-volume"]
    _, spec, _ = server(r)
    [data] = [v for v in spec["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "emptyDir": {}}
    assert r.of_kind("PersistentVolumeClaim") == []
    assert "emptyDir (lost with the pod" in r.notes


def test_production_values(rendered: dict[str, Rendered]) -> None:
    r = rendered["production"]
    deployment, spec, container = server(r)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert container["image"] == "registry.example.com/acme-delegate:0.1.0"
    env = env_of(container)
    assert env["ACME_DELEGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "acme-delegate", "key": "database-url"}
    assert secret_file(spec, container, env["ACME_DELEGATE_DO_TOKEN_FILE"]["value"]) == (
        "acme-delegate", "do-token")
    assert secret_file(spec, container, env["ACME_DELEGATE_ADMIN_TOKEN_FILE"]["value"]) == (
        "acme-delegate", "admin-token")
    assert env["ACME_DELEGATE_REGISTRATION"]["value"] == "token"
    # /register takes its own secret, never the admin token (clients store the URL).
    assert secret_file(spec, container,
                       env["ACME_DELEGATE_REGISTRATION_TOKEN_FILE"]["value"]) == (
        "acme-delegate", "registration-token")
    assert env["ACME_DELEGATE_TRUSTED_PROXIES"]["value"] == "10.244.0.0/16"
    assert env["ACME_DELEGATE_PUBLIC_URL"]["value"] == "https://acme-delegate.example.net"
    assert r.of_kind("Secret") == [] and r.of_kind("PersistentVolumeClaim") == []
    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert r.one("Job")["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"

    ingress = r.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["acme-delegate.example.net"],
                                       "secretName": "acme-delegate-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "acme-delegate.example.net"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": r.one("Service")["metadata"]["name"], "port": {"name": "http"}}

    policy = r.one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [ingress_rule] = policy["spec"]["ingress"]
    assert ingress_rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert len(ingress_rule["from"]) == 2
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["spec"]["egress"]
                    for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (5432, "TCP")}
    postgres_rule = next(rule for rule in policy["spec"]["egress"]
                         if rule["ports"][0]["port"] == 5432)
    assert postgres_rule["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "databases"}
    # The policy covers the server and the migration Job (it must reach PostgreSQL too).
    selector = policy["spec"]["podSelector"]["matchLabels"]
    job_labels = r.one("Job")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert selector.items() <= job_labels.items()

    monitor = r.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= r.one(
        "Service")["metadata"]["labels"].items()


def test_network_policy_defaults(rendered: dict[str, Rendered]) -> None:
    policy = rendered["postgres-secret-1"].one("NetworkPolicy")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 443, 5432}
    assert "from" not in policy["spec"]["ingress"][0]  # ingressFrom empty: anyone
    https = next(rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 443)
    assert https["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
    # SQLite: no PostgreSQL rule.
    sqlite = rendered["sqlite-without-volume"].one("NetworkPolicy")
    ports = {p["port"] for rule in sqlite["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 443}


def test_service_targets_the_server_pods(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    service = r.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "server"


def test_notes_say_how_to_issue_a_credential_and_wire_cert_manager(
        rendered: dict[str, Rendered]) -> None:
    notes = rendered["default"].notes
    assert ("kubectl -n acme exec deploy/acme-delegate -- acme-delegate accounts create "
            "--domain www.example.com --format cert-manager > acmedns.json") in notes
    assert ("kubectl -n cert-manager create secret generic acme-delegate-account "
            "--from-file=acmedns.json") in notes
    assert "kind: ClusterIssuer" in notes
    assert "acmeDNS:" in notes
    assert "host: http://acme-delegate.acme.svc.cluster.local" in notes
    assert "key: acmedns.json" in notes
    assert "set ingress.enabled=true" in notes
    # Behind an ingress, the solver is pointed at the public URL.
    behind_ingress = rendered["ingress"].notes
    assert "host: https://acme-delegate.example.net" in behind_ingress
    assert "set ingress.enabled=true" not in behind_ingress


# --- what the chart refuses ------------------------------------------------------------


REFUSED = {
    "sqlite-with-3-replicas": (
        {"replicaCount": 3, **TOKEN_ONLY},
        "replicaCount is 3, but the database is SQLite"),
    "no-token": ({}, "no DigitalOcean token: set digitalocean.existingSecret"),
    "token-registration-without-registration-token": (
        {**TOKEN_ONLY, "admin": {"token": "admin-" + "9" * 40},
         "config": {"registration": "token", "delegationDomain": "a.example"}},
        "config.registration=token needs the registration token"),
    "open-registration-without-delegation-domain": (
        {**TOKEN_ONLY, "config": {"registration": "open"}},
        "config.registration=open hands out delegated names: set config.delegationDomain"),
    "grace-period-shorter-than-drain": (
        {**TOKEN_ONLY, "terminationGracePeriodSeconds": 30},
        "terminationGracePeriodSeconds (30) must exceed lifecycle.preStopSeconds (5) plus "
        "the 30 s drain"),
}

SCHEMA_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "registration-enum": ({"config": {"registration": "sometimes"}}, "/config/registration"),
    "log-level-enum": ({"config": {"logLevel": "TRACE"}}, "/config/logLevel"),
    "txt-ttl-minimum": ({"config": {"txtTtl": 29}}, "/config/txtTtl"),
    "txt-ttl-integer": ({"config": {"txtTtl": 30.5}}, "/config/txtTtl"),
    "replicas-minimum": ({"replicaCount": 0}, "/replicaCount"),
    "replicas-type": ({"replicaCount": "3"}, "/replicaCount"),
    "unknown-top-level-key": ({"replicas": 3}, "replicas"),
    "unknown-nested-key": ({"config": {"txtTTL": 60}}, "txtTTL"),
    "unknown-secret-key": ({"digitalocean": {"secret": "x"}}, "secret"),
    "max-values-maximum": ({"config": {"maxValuesPerName": 21}}, "/config/maxValuesPerName"),
    "database-url-scheme": ({"database": {"url": "mysql://u@h/db"}}, "/database/url"),
    "pull-policy-enum": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "service-port-range": ({"service": {"port": 0}}, "/service/port"),
    "zones-are-domains": ({"config": {"zones": ["not a domain"]}}, "/config/zones"),
    "image-repository-required": ({"image": {"repository": ""}}, "/image/repository"),
    "service-account-unknown-key": ({"serviceAccount": {"automount": True}}, "automount"),
    "pre-stop-maximum": ({"lifecycle": {"preStopSeconds": 301}}, "/lifecycle/preStopSeconds"),
}


@pytest.fixture(scope="module")
def refusals() -> dict[str, Rendered | RenderError]:
    require_helm()
    cases = {**{k: v for k, (v, _) in REFUSED.items()},
             **{k: {**TOKEN_ONLY, **v} for k, (v, _) in SCHEMA_REJECTS.items()}}
    return dict(zip(cases, render_many([with_image(v) for v in cases.values()]), strict=True))


@pytest.mark.parametrize("case", REFUSED)
def test_chart_refuses(refusals: dict[str, Rendered | RenderError], case: str) -> None:
    result = refusals[case]
    assert isinstance(result, RenderError), f"{case} rendered: {result}"
    assert "execution error" in str(result)
    assert REFUSED[case][1] in str(result)


@pytest.mark.parametrize("case", SCHEMA_REJECTS)
def test_schema_rejects(refusals: dict[str, Rendered | RenderError], case: str) -> None:
    result = refusals[case]
    assert isinstance(result, RenderError), f"{case} rendered: {result}"
    message = str(result)
    assert "values don't meet the specifications of the schema" in message, message
    assert SCHEMA_REJECTS[case][1] in message, message


# --- static facts ----------------------------------------------------------------------


def test_schema_is_strict_json_and_covers_every_default() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["config"]["properties"]["registration"]["enum"] == ["closed", "token", "open"]
    assert props["config"]["properties"]["logLevel"]["enum"] == [
        "DEBUG", "INFO", "WARNING", "ERROR"]
    assert props["config"]["properties"]["txtTtl"]["minimum"] == 30
    assert props["replicaCount"]["minimum"] == 1
    top_level = set(re.findall(r"^([A-Za-z]\w*):", (CHART / "values.yaml").read_text(), re.M))
    assert top_level <= set(props), top_level - set(props)


def test_chart_app_version_is_the_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = (CHART / "Chart.yaml").read_text()
    assert re.search(r"^apiVersion: v2$", chart, re.M)
    assert re.search(rf'^appVersion: "{re.escape(project)}"$', chart, re.M), project


# --- operations: probes, shutdown, ServiceAccount, monitoring, extras, helm test ------


def test_shutdown_outlasts_the_drain(rendered: dict[str, Rendered]) -> None:
    """The kubelet's grace period covers the preStop pause plus serve's drain."""
    from app.server import DRAIN_SECONDS

    _, spec, container = server(rendered["default"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:2] == ["python", "-c"] and "sleep(5)" in pre_stop[2]
    assert spec["terminationGracePeriodSeconds"] > 5 + DRAIN_SECONDS


def test_service_account(rendered: dict[str, Rendered]) -> None:
    r = rendered["operations"]
    account = r.one("ServiceAccount")
    assert account["metadata"]["annotations"]["iam.example.com/role"] == "acme-delegate"
    assert account["automountServiceAccountToken"] is False
    _, spec, _ = server(r)
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False
    existing = rendered["existing-service-account"]
    assert existing.of_kind("ServiceAccount") == []
    assert server(existing)[1]["serviceAccountName"] == "shared"
    assert pod_spec(existing.one("Job"))["serviceAccountName"] == "shared"


def test_service_monitor_and_prometheus_rule(rendered: dict[str, Rendered]) -> None:
    r = rendered["operations"]
    monitor = r.one("ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["acme"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"

    rule = r.one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    [group] = rule["spec"]["groups"]
    alerts = {a["alert"]: a for a in group["rules"]}
    # One alert per row of docs/operations.md's table, on the metrics it names.
    operations = (ROOT / "docs" / "operations.md").read_text()
    section = operations.split("## Alerts worth setting", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(alerts) == len(rows) - 1  # less the header
    for name, metric in (
            ("AcmeDelegateHealthFailing", "acme_delegate_http_requests_total"),
            ("AcmeDelegateDigitalOceanErrors", "acme_delegate_digitalocean_requests_total"),
            ("AcmeDelegateRateLimitBudget", "acme_delegate_digitalocean_ratelimit_remaining"),
            ("AcmeDelegateReconcileFailures", "acme_delegate_reconcile_runs_total"),
            ("AcmeDelegateValuesPilingUp", "acme_delegate_txt_values"),
            ("AcmeDelegateAuthenticationFailures", "acme_delegate_auth_failures_total"),
            ("AcmeDelegateValuesNotYetInDns", "acme_delegate_dns_waits_total"),
            ("AcmeDelegateNameserversUnreachable", "acme_delegate_nameserver_up")):
        assert metric in alerts[name]["expr"], name
        assert metric.removesuffix("_total") in operations, metric
    for alert in alerts.values():
        assert alert["labels"]["team"] == "platform" and alert["labels"]["severity"]
        assert alert["annotations"]["summary"]
    assert 'job="acme-delegate",namespace="acme"' in alerts["AcmeDelegateDown"]["expr"]


def test_extra_env_volumes_labels_and_annotations(rendered: dict[str, Rendered]) -> None:
    deployment, spec, container = server(rendered["operations"])
    assert env_of(container)["ACME_DELEGATE_API_DOCS"] == {
        "name": "ACME_DELEGATE_API_DOCS", "value": "false"}
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in spec["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ca", "readOnly": True} in container["volumeMounts"]
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "platform"
    assert template["annotations"]["example.com/owner"] == "platform"
    # Selector labels stay the chart's own: extra pod labels never change the selector.
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]


def test_helm_test_pod_asks_the_service(rendered: dict[str, Rendered]) -> None:
    import yaml

    r = rendered["default"]
    hooks = [yaml.safe_load(h["manifest"]) for h in r.release.get("hooks", [])
             if "test" in h.get("events", [])]
    assert len(hooks) == 1, r.release.get("hooks")
    [pod] = hooks
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    script = container["command"][2]
    service = r.one("Service")["metadata"]["name"]
    assert f"http://{service}:80" in script
    assert '"/readyz"' in script and '"/health"' in script
    assert container["image"] == server(r)[2]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_chart_readme_documents_every_value() -> None:
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = {key for row in re.findall(r"^\| (.+?) \|", readme, re.M)
                  for key in re.findall(r"`([A-Za-z][\w.]*)`", row)}
    # Every key to the second level (deeper ones are a section's details).
    keys = {f"{top}.{sub}" if isinstance(value, dict) and value else top
            for top, value in values.items()
            for sub in (value if isinstance(value, dict) and value else [None])}
    sections = {"podSecurityContext", "securityContext", "resources"}
    keys = {k for k in keys if k.split(".")[0] not in sections} | sections
    assert keys - documented == set()
