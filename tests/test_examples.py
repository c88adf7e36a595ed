"""The examples in examples/, parsed and checked against the code they configure."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib

import msgspec
import pytest
import yaml

from supervisor import cli
from supervisor.core import units
from supervisor.faces import endpoint, metrics
from supervisor.settings import config, loading, probes, validate
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
FIELDS = {f.name for f in msgspec.structs.fields(config.Config)}


def _memwarden_env(env: dict[str, str]) -> config.Config:
    """Every MEMWARDEN_* variable names a setting, and together they are a valid one."""
    names = {k.removeprefix("MEMWARDEN_").lower() for k in env if k.startswith("MEMWARDEN_")}
    assert names <= FIELDS | set(config.NESTED), names - FIELDS
    return loading.load({"command": ["worker"]}, environ=env)


def _stop_budget(cfg: config.Config) -> float:
    """How long memwarden's ordered stop can take: `shutdown` and TERM each get the grace."""
    return 2 * float(cfg.grace) + 5.0


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments left out."""
    out: list[tuple[str, str]] = []
    text = (EXAMPLES / "Dockerfile").read_text()
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env_pairs(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


def test_the_dockerfile_runs_memwarden_as_its_entrypoint() -> None:
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM" and kinds.count("ENTRYPOINT") == 1
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["memwarden", "run", "--"] and entrypoint[0] in scripts
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[:2] == ["python3", "worker.py"]
    env: dict[str, str] = {}
    for kind, args in steps:
        if kind == "ENV":
            env.update(_env_pairs(args))
    cfg = _memwarden_env(env)
    assert cfg.snapshots == "-" and cfg.log_format == "json"
    _ready_file_is_touched(cfg, cmd)
    port = validate.parse_address(cfg.metrics or "")[1]
    assert dict(steps)["EXPOSE"] == str(port)
    health = dict(steps)["HEALTHCHECK"]
    probe = json.loads(health.split(" CMD ", 1)[1])
    args = cli.build_parser().parse_args(probe[1:])
    assert probe[0] == "memwarden" and args.action == "status" and args.check == "ready"
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    assert "util-linux" in runs  # setpriv: starts workers without forking memwarden
    stop = re.search(r"--stop-timeout (\d+)", (EXAMPLES / "Dockerfile").read_text())
    assert stop and int(stop.group(1)) >= _stop_budget(cfg)


def _ready_file_is_touched(cfg: config.Config, argv: list[str]) -> None:
    """The worker touches the file memwarden's readiness probe waits for."""
    probe = probes.probe_of(None, cfg)
    assert probe is not None and probe.kind == "file"
    assert argv[argv.index("--ready-file") + 1] == probe.path
    assert "--ready-file" in (ROOT / "scripts" / "example_automaton.py").read_text()


def _documents() -> list[dict]:
    return list(yaml.safe_load_all((EXAMPLES / "kubernetes.yaml").read_text()))


def test_the_kubernetes_manifest_matches_the_code() -> None:
    deployment, monitor = _documents()
    assert deployment["kind"] == "Deployment" and monitor["kind"] == "PodMonitor"
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert units.parse_size(container["resources"]["limits"]["memory"].replace("Mi", "MiB"))

    env = {e["name"]: e for e in container["env"]}
    # The downward API gives the names the snapshot header reads (supervisor/app.py).
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["CONTAINER_NAME"]["value"] == container["name"]
    label = env["WORKLOAD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert label == "metadata.labels['app']" and pod["metadata"]["labels"]["app"]
    source = (ROOT / "supervisor" / "app.py").read_text()
    for name in ("POD_NAME", "POD_NAMESPACE", "CONTAINER_NAME", "WORKLOAD_NAME"):
        assert f'os.environ.get("{name}")' in source
    cfg = _memwarden_env({k: e["value"] for k, e in env.items() if "value" in e})
    assert cfg.snapshots == "-"
    _ready_file_is_touched(cfg, container["args"])

    # One port: served by --metrics, named for the probes, announced to Prometheus.
    port = validate.parse_address(cfg.metrics or "")[1]
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/scrape"] == "true"
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in endpoint.PATHS
        assert get["port"] in (declared["name"], port)
    (endpoint_,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint_["port"] == declared["name"] and endpoint_["path"] == "/metrics"
    assert monitor["spec"]["selector"] == deployment["spec"]["selector"]

    assert pod["spec"]["terminationGracePeriodSeconds"] >= _stop_budget(cfg)
    # args replace the image's CMD and keep its ENTRYPOINT (memwarden run --).
    assert container["args"] == json.loads(dict(dockerfile())["CMD"])
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert any("useradd --uid 10001" in args for kind, args in dockerfile() if kind == "RUN")


def _unit() -> dict[str, list[str]]:
    """Each `Key=value` of the [Service] section, in order (a key may repeat)."""
    section, out = "", {}
    for line in (EXAMPLES / "memwarden.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_systemd_unit_agrees_with_memwarden() -> None:
    unit = _unit()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["OOMPolicy"] == ["continue"] and unit["KillMode"] == ["mixed"]
    env = dict(v.split("=", 1) for v in unit["Environment"])
    cfg = _memwarden_env(env)
    assert units.parse_duration(unit["TimeoutStopSec"][0]) >= _stop_budget(cfg)
    assert units.parse_duration(unit["WatchdogSec"][0]) >= 10 * float(cfg.interval)
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[0].endswith("/memwarden") and argv[1:3] == ["run", "--"]
    # A probe that tells the generations apart: on the port memwarden hands over.
    probe = probes.probe_of(None, cfg)
    listen = probes.listen_of(None, cfg)
    assert probe is not None and probe.kind == "http" and listen
    assert probes.ambiguity(probe, listen) is None
    assert argv[3].endswith("/gunicorn") and "-b" not in argv  # gunicorn reads LISTEN_FDS
    # memwarden exits 143 when the worker dies of the TERM of systemd's stop (as tini).
    assert unit["SuccessExitStatus"] == ["143"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert cfg.control and cfg.control.startswith("/run/memwarden/")
    assert unit["RuntimeDirectory"] == ["memwarden"]
    verify = shutil.which("systemd-analyze")
    if verify:  # where systemd is installed, it checks the unit's syntax too
        r = subprocess.run([verify, "verify", "--man=no", str(EXAMPLES / "memwarden.service")],
                           capture_output=True, text=True, timeout=60)
        assert "Unknown key" not in r.stderr and "Invalid" not in r.stderr, r.stderr


def test_the_alert_rules_use_metrics_memwarden_serves() -> None:
    from snapshots.schema import Event
    from tests.supervisor.test_endpoint import _reply

    counts = metrics.EventCounts()
    counts(Event(t=0.0, type="give_up", worker="web"))
    body, _ = metrics.Exposition(lambda: _reply(container=1, container_level="low"),
                                 counts).render("")
    served = set(re.findall(r"^(memwarden_\w+?)(?:\{| )", body.decode(), re.M))
    rules = yaml.safe_load((EXAMPLES / "alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"memwarden_\w+", e)}
    assert used and used <= served, used - served
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert rule["alert"].startswith("Memwarden") and rule["annotations"]["summary"]


@pytest.mark.parametrize("name", ["Dockerfile", "kubernetes.yaml", "memwarden.service",
                                  "alerts.yaml"])
def test_the_operations_guide_shows_each_example(name: str) -> None:
    assert f"examples/{name}" in (ROOT / "docs" / "operations.md").read_text()
