"""The compose stack in compose/ is consistent with the repository and the metrics contract.

No Docker engine is needed: the files are parsed and cross-checked (mounted paths exist, images
are pinned, every stage has a worker that Prometheus scrapes, the dashboard only queries metrics
the code exports).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = COMPOSE_DIR / "grafana" / "provisioning" / "datasources"
GRAFANA_PROVIDERS = COMPOSE_DIR / "grafana" / "provisioning" / "dashboards"
DASHBOARD = COMPOSE_DIR / "grafana" / "dashboards" / "streamflow.json"
EXAMPLE_PIPELINE = "examples/support_tickets/pipeline.py"
EXAMPLE_STAGES = ("classify", "retrieve", "generate", "check")

# The metrics contract (DESIGN.md): panels must exist for each of these.
CONTRACT_METRICS = (
    "streamflow_events_total",
    "streamflow_stage_duration_seconds_bucket",
    "streamflow_in_flight",
    "streamflow_buffer_items",
    "streamflow_backpressure_seconds_total",
    "streamflow_consumer_lag",
    "streamflow_paused_partitions",
    "streamflow_model_tokens_total",
    "streamflow_model_cost_usd_total",
)

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:$])streamflow_[A-Za-z0-9_:]*")
_FULL_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SUFFIXES_BY_KIND = {
    "counter": ("_total", "_created"),
    "gauge": (),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
}


# --- helpers -------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = _load_yaml(COMPOSE_FILE)
    assert isinstance(loaded, dict), "compose.yaml must be a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "compose.yaml declares no services"
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    if isinstance(command, str):
        return command.split()
    return [str(part) for part in command]


def _option(command: list[str], flag: str) -> str | None:
    for index, part in enumerate(command):
        if part == flag and index + 1 < len(command):
            return command[index + 1]
        if part.startswith(flag + "="):
            return part.split("=", 1)[1]
    return None


def _streamflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services built from compose/Dockerfile, i.e. those that run the streamflow CLI."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def _worker_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in _streamflow_services(services).items()
        if _command(svc)[:1] == ["worker"]
    }


def _bind_sources(service: Mapping[str, Any]) -> Iterator[str]:
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
            # A bare name is a named volume, not a host path.
            if source.startswith((".", "/", "~")):
                yield source
        elif volume.get("type") == "bind":
            yield str(volume["source"])


def _host_path(source: str) -> Path:
    return (COMPOSE_DIR / source).resolve()


def _image_ref(image: str) -> tuple[str, str | None, str | None]:
    """Split `repo[:tag][@digest]` into its parts; a registry port is not a tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag, digest or None
    return name, None, digest or None


def _assert_pinned(image: str, where: str) -> None:
    _, tag, digest = _image_ref(image)
    if digest:
        assert digest.startswith("sha256:"), f"{where}: bad digest in {image!r}"
        return
    assert tag is not None, f"{where}: image {image!r} has no tag"
    assert tag != "latest", f"{where}: image {image!r} uses latest"
    assert _FULL_VERSION.search(tag), f"{where}: tag of {image!r} is not a full x.y.z version"


def _dashboard_exprs(node: Any) -> Iterator[str]:
    """Every PromQL string in a dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition", "query") and isinstance(value, str):
                yield value
            else:
                yield from _dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_exprs(item)


def _panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield panel, target


def metric_names_in_promql(expr: str) -> set[str]:
    """Names of streamflow_* series a PromQL expression selects (label values ignored)."""
    return set(_METRIC_NAME.findall(_STRING_LITERAL.sub('""', expr)))


def exposed_series(exported: Iterable[str] | Mapping[str, str]) -> set[str]:
    """Every series name the exported metrics appear under on /metrics.

    A mapping of name to kind ("counter", "histogram", ...) gives the exact suffixes. For a bare
    list of names, a name ending in `_total` is a counter (`_created` beside it) and any other
    name may carry the histogram and summary suffixes, but never `_total`.
    """
    if isinstance(exported, Mapping):
        kinds = {str(name): str(kind).lower() for name, kind in exported.items()}
    else:
        kinds = {
            str(name): "counter" if str(name).endswith("_total") else "histogram"
            for name in exported
        }
    series: set[str] = set()
    for name, kind in kinds.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        series.add(name)
        series.update(base + suffix for suffix in _SUFFIXES_BY_KIND.get(kind, ()))
    return series


def _code_metric_names() -> Iterable[str] | Mapping[str, str]:
    module = pytest.importorskip(
        "streamflow.metrics", reason="streamflow.metrics is not importable yet"
    )
    names = getattr(module, "METRIC_NAMES", None)
    if names is None:
        pytest.skip("streamflow.metrics does not export METRIC_NAMES yet")
    return names  # type: ignore[no-any-return]


def _example_stage_names() -> list[str]:
    """Stage names of the example pipeline, loaded the way `streamflow worker` loads it."""
    if not (REPO / EXAMPLE_PIPELINE).is_file():
        pytest.skip(f"{EXAMPLE_PIPELINE} is not in the repository yet")
    loader = pytest.importorskip(
        "streamflow.cli._load", reason="the CLI pipeline loader is not importable yet"
    )
    pipeline = loader.load_pipeline(str(REPO / EXAMPLE_PIPELINE))
    return [str(stage.name) for stage in pipeline.stages]


# --- the helpers themselves ----------------------------------------------------------------------


def test_promql_parser_finds_histogram_series_and_ignores_label_values() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (stage, le) (rate(streamflow_stage_duration_seconds_bucket"
        '{pipeline=~"$pipeline", topic="streamflow_not_a_metric"}[$__rate_interval])))'
        " / ignoring(le) my_streamflow_thing"
    )

    assert metric_names_in_promql(expr) == {"streamflow_stage_duration_seconds_bucket"}


def test_exposed_series_strips_suffixes_by_metric_kind() -> None:
    typed = exposed_series({"streamflow_events_total": "counter", "streamflow_in_flight": "gauge"})
    untyped = exposed_series(["streamflow_stage_duration_seconds", "streamflow_events_total"])

    assert {"streamflow_events_total", "streamflow_events_created"} <= typed
    assert "streamflow_in_flight_bucket" not in typed
    assert "streamflow_stage_duration_seconds_bucket" in untyped
    assert "streamflow_stage_duration_seconds_total" not in untyped
    assert "streamflow_events_total_bucket" not in untyped
    assert "streamflow_not_exported" not in untyped | typed


# --- compose.yaml --------------------------------------------------------------------------------


def test_compose_declares_kafka_topics_monitoring_and_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    expected = {"kafka", "topics", "prometheus", "grafana", "producer", "consumer"}
    expected |= {f"worker-{stage}" for stage in EXAMPLE_STAGES}

    assert expected <= set(services)


def test_bind_mounted_host_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [
        f"{name}: {source}"
        for name, svc in services.items()
        for source in _bind_sources(svc)
        if not _host_path(source).exists()
    ]

    assert not missing, f"bind mounts of missing host paths: {missing}"


def test_build_contexts_and_dockerfiles_exist(services: dict[str, dict[str, Any]]) -> None:
    built = _streamflow_services(services)
    assert built, "no service builds the streamflow image"
    for name, svc in built.items():
        build = svc["build"]
        context = _host_path(build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert context == REPO, f"{name}: build context should be the repository root"
        assert dockerfile.resolve() == DOCKERFILE, f"{name}: builds {dockerfile}, not compose/"


def test_external_images_are_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        if "build" in svc:
            # Built here; its tag names the local build, the base image is checked below.
            assert image is None or _image_ref(image)[1] not in (None, "latest"), name
            continue
        assert image, f"{name}: neither image nor build"
        _assert_pinned(image, name)


def test_kafka_runs_single_node_kraft_with_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    env = kafka["environment"]

    assert _image_ref(kafka["image"])[0] == "apache/kafka"
    assert set(str(env["KAFKA_PROCESS_ROLES"]).split(",")) == {"broker", "controller"}
    assert str(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]).startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert "CONTROLLER" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env["CLUSTER_ID"]
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"
    assert "test" in kafka["healthcheck"]


def test_topics_are_created_once_kafka_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    topics = services["topics"]
    command = _command(topics)

    assert command[:3] == ["topics", "create", EXAMPLE_PIPELINE]
    assert int(_option(command, "--partitions") or 0) >= 1
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics.get("restart", "no") == "no"


def test_streamflow_services_reach_kafka_inside_the_network(
    services: dict[str, dict[str, Any]],
) -> None:
    listeners = str(services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    for name, svc in _streamflow_services(services).items():
        broker = _option(_command(svc), "--broker") or svc["environment"]["STREAMFLOW_BROKER"]
        assert f"//{broker}" in listeners, f"{name}: {broker} is not an advertised listener"


def test_every_example_stage_has_a_worker_service(services: dict[str, dict[str, Any]]) -> None:
    workers = _worker_services(services)
    stages_served = {_option(_command(svc), "--stage"): name for name, svc in workers.items()}

    for stage in EXAMPLE_STAGES:
        assert stages_served.get(stage) == f"worker-{stage}", f"no worker-{stage} service"
    for name, svc in workers.items():
        command = _command(svc)
        assert command[1] == EXAMPLE_PIPELINE, f"{name} runs another pipeline"
        assert _option(command, "--metrics-port"), f"{name} serves no metrics port"
        # Metrics bind the loopback by default; Prometheus scrapes from another container.
        assert _option(command, "--metrics-host") == "0.0.0.0", f"{name}: no --metrics-host"
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert "container_name" not in svc, f"{name} cannot scale with a fixed container name"


def test_worker_services_match_the_stages_of_the_example_pipeline(
    services: dict[str, dict[str, Any]],
) -> None:
    stages = _example_stage_names()
    workers = {_option(_command(svc), "--stage") for svc in _worker_services(services).values()}

    assert workers == set(stages)


def test_generate_stage_runs_two_replicas(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker-generate"]["deploy"]["replicas"] == 2


def test_generate_replicas_share_one_model_budget_in_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    assert _image_ref(redis["image"])[0] == "redis"
    assert "test" in redis["healthcheck"]
    generate = services["worker-generate"]
    url = urlsplit(str(generate["environment"]["STREAMFLOW_LIMITER_URL"]))
    assert url.scheme == "redis" and url.hostname == "redis", url
    assert generate["depends_on"]["redis"]["condition"] == "service_healthy"
    # Its own environment replaces the shared one: it must still reach Kafka.
    assert generate["environment"]["STREAMFLOW_BROKER"] == "kafka:9092"
    runs = " ".join(rest for keyword, rest in _dockerfile_instructions() if keyword == "RUN")
    assert "pip install .[redis]" in runs, "the image lacks the redis client"


def test_producer_runs_only_in_demo_profile_and_consumer_by_default(
    services: dict[str, dict[str, Any]],
) -> None:
    producer = _command(services["producer"])
    consumer = _command(services["consumer"])

    assert services["producer"]["profiles"] == ["demo"]
    assert "profiles" not in services["consumer"]
    assert producer[:2] == ["produce", EXAMPLE_PIPELINE]
    assert consumer[:2] == ["consume", EXAMPLE_PIPELINE]
    assert _option(consumer, "--output") == "-"


def test_files_the_streamflow_commands_read_exist_in_the_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    # The image copies examples/ to its working directory, so these paths resolve the same way.
    referenced = {
        _command(services["producer"])[1],
        _option(_command(services["producer"]), "--input") or "",
        *(_command(svc)[1] for svc in _worker_services(services).values()),
    }
    generated = _generated_by_dockerfile()
    missing = sorted(
        path for path in referenced if not (REPO / path).is_file() and path not in generated
    )

    assert not missing, f"files named in compose commands are missing: {missing}"


# --- Dockerfile ----------------------------------------------------------------------------------


def _generated_by_dockerfile() -> set[str]:
    """Files a RUN step of the Dockerfile writes with a repository script (``--out PATH``)."""
    generated = set()
    for keyword, rest in _dockerfile_instructions():
        words = rest.split()
        if keyword == "RUN" and "--out" in words:
            script = next((w for w in words if w.endswith(".py")), "")
            if (REPO / script).is_file():
                generated.add(words[words.index("--out") + 1])
    return generated


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_base_image_is_pinned() -> None:
    bases = [rest.split()[0] for keyword, rest in _dockerfile_instructions() if keyword == "FROM"]

    assert bases, "Dockerfile has no FROM"
    for base in bases:
        assert _image_ref(base)[0] == "python"
        _assert_pinned(base, "Dockerfile")
        assert (_image_ref(base)[1] or "").startswith("3.11"), base


def test_dockerfile_copies_only_paths_that_exist() -> None:
    copies = [rest.split() for keyword, rest in _dockerfile_instructions() if keyword == "COPY"]

    assert copies
    for parts in copies:
        sources = [part for part in parts[:-1] if not part.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} is not in the repository"


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    instructions = _dockerfile_instructions()
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")

    assert "pip install ." in runs
    assert ("ENTRYPOINT", '["streamflow"]') in instructions


# --- Prometheus ----------------------------------------------------------------------------------


def test_prometheus_config_is_mounted_where_prometheus_reads_it(
    services: dict[str, dict[str, Any]],
) -> None:
    volumes = [v for v in services["prometheus"]["volumes"] if isinstance(v, str)]
    mounts = {_host_path(v.split(":")[0]): v.split(":")[1] for v in volumes if ":" in v}

    assert mounts.get(PROMETHEUS_CONFIG.resolve()) == "/etc/prometheus/prometheus.yml"


def test_prometheus_discovers_every_worker_service_by_dns(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _load_yaml(PROMETHEUS_CONFIG)
    workers = _worker_services(services)
    ports = {int(_option(_command(svc), "--metrics-port") or 0) for svc in workers.values()}
    discovered: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "SRV") == "A", "compose DNS serves A records, not SRV"
            for name in sd["names"]:
                discovered[name] = int(sd["port"])

    assert set(workers) <= set(discovered), "some worker services are not scraped"
    assert set(discovered) <= set(services), "Prometheus scrapes names that are not services"
    assert {discovered[name] for name in workers} == ports
    assert len(ports) == 1


# --- Grafana -------------------------------------------------------------------------------------


def _mounted_dirs(service: Mapping[str, Any]) -> dict[str, Path]:
    """Container path -> host path for the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.startswith("."):
            host, container = volume.split(":")[:2]
            mounts[container] = _host_path(host)
    return mounts


def _datasources() -> list[dict[str, Any]]:
    files = sorted(GRAFANA_DATASOURCES.glob("*.y*ml"))
    assert files, "no Grafana datasource provisioning file"
    return [ds for path in files for ds in _load_yaml(path)["datasources"]]


def test_grafana_provisioning_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    mounts = _mounted_dirs(services["grafana"])

    assert mounts["/etc/grafana/provisioning/datasources"] == GRAFANA_DATASOURCES.resolve()
    assert mounts["/etc/grafana/provisioning/dashboards"] == GRAFANA_PROVIDERS.resolve()


def test_grafana_datasource_points_at_the_prometheus_service(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = [ds for ds in _datasources() if ds["type"] == "prometheus"]

    assert len(prometheus) == 1
    url = urlsplit(prometheus[0]["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    assert f"{url.port}:{url.port}" in services["prometheus"]["ports"]
    assert prometheus[0]["uid"]


def test_grafana_dashboard_provider_loads_the_streamflow_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    files = sorted(GRAFANA_PROVIDERS.glob("*.y*ml"))
    providers = [p for path in files for p in _load_yaml(path)["providers"]]
    mounts = _mounted_dirs(services["grafana"])

    assert providers
    for provider in providers:
        host_dir = mounts[provider["options"]["path"]]
        assert (host_dir / DASHBOARD.name).resolve() == DASHBOARD.resolve()


def test_dashboard_uses_the_provisioned_datasource_uid(dashboard: dict[str, Any]) -> None:
    uid = next(ds["uid"] for ds in _datasources() if ds["type"] == "prometheus")

    def datasource_uids(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and "uid" in source:
                yield source["uid"]
            for value in node.values():
                yield from datasource_uids(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasource_uids(item)

    uids = set(datasource_uids(dashboard))
    assert uids == {uid}


def test_dashboard_has_pipeline_and_stage_variables_used_by_every_query(
    dashboard: dict[str, Any],
) -> None:
    variables = {var["name"] for var in dashboard["templating"]["list"]}
    targets = list(_panel_targets(dashboard))

    assert {"pipeline", "stage"} <= variables
    assert 35 <= dashboard["schemaVersion"] <= 41
    assert targets
    for panel, target in targets:
        assert '=~"$pipeline"' in target["expr"], panel["title"]
        assert '=~"$stage"' in target["expr"], panel["title"]


def test_dashboard_has_a_panel_for_every_contract_metric(dashboard: dict[str, Any]) -> None:
    used = {name for expr in _dashboard_exprs(dashboard) for name in metric_names_in_promql(expr)}

    assert set(CONTRACT_METRICS) <= used, sorted(set(CONTRACT_METRICS) - used)
    exprs = [target["expr"] for _, target in _panel_targets(dashboard)]
    assert any('outcome="dead_lettered"' in expr for expr in exprs)
    assert any("histogram_quantile(0.99" in expr for expr in exprs)
    assert any("histogram_quantile(0.5" in expr for expr in exprs)


def test_dashboard_queries_only_metrics_the_code_exports(dashboard: dict[str, Any]) -> None:
    exported = exposed_series(_code_metric_names())
    used = {name for expr in _dashboard_exprs(dashboard) for name in metric_names_in_promql(expr)}

    assert used, "the dashboard queries no streamflow metric"
    assert used <= exported, (
        f"dashboard queries metrics the code does not export: {used - exported}"
    )


def test_dashboard_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
