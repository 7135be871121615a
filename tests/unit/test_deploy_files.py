"""``deploy/``: the Prometheus configuration and rules, the Grafana provisioning and
dashboards, and the systemd units of ds01d and of the JupyterHub on ds01.

- ``promtool check rules``, ``promtool check config`` and ``promtool test rules`` (Debian's
  ``prometheus`` package; ``make images`` installs it). Without promtool these tests skip,
  or fail when CI or DS01_REQUIRE_DOCKER=1 is set (``conftest.strict_mode``); so does
  ``systemd-analyze verify`` of the unit without Debian's ``systemd``.
- Every metric a rule or a dashboard query names is one the exporter's code makes (the
  metric families of ``ds01.metrics.collector``, read from its source), a recording rule of
  ds01-rules.yml, or one of Prometheus' own; every function is a PromQL function. Every
  dashboard query also goes through promtool's PromQL parser (as a recording rule,
  Grafana's variables filled in). Every metric of the admin guide's table ("Metrics") is
  one the exporter makes, of the type the guide says.
- The cluster dashboard selects and groups by each node (``ds01_node``, the label of
  prometheus-cluster.yml's node files).
- The dashboards are valid against ``grafana_dashboard.schema.json`` (what Grafana needs:
  title, uid, panels with type, title, grid position and Prometheus targets, templating),
  panels do not overlap, and every ``$variable`` is defined.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES = PROMETHEUS_DIR / "ds01-rules.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
CLUSTER_CONFIG = PROMETHEUS_DIR / "prometheus-cluster.yml"
NODE_FILES = sorted((PROMETHEUS_DIR / "ds01-nodes").glob("*.yml"))
RULE_TESTS = PROMETHEUS_DIR / "ds01-rules.test.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = DEPLOY / "grafana" / "provisioning"
UNIT = DEPLOY / "systemd" / "ds01d.service"
HUB_UNIT = DEPLOY / "jupyterhub" / "jupyterhub.service"
SCHEMA = Path(__file__).with_name("grafana_dashboard.schema.json")
ADMIN_DOC = REPO / "docs" / "admin.md"
COLLECTOR = REPO / "src" / "ds01" / "metrics" / "collector.py"
#: The login node's exporter of Slurm's queue (``ds01 admin slurm exporter``).
SLURM_QUEUE_COLLECTOR = REPO / "src" / "ds01" / "metrics" / "slurm_queue.py"
CLUSTER_DASHBOARD = DEPLOY / "grafana" / "dashboards" / "cluster.json"

#: Series Prometheus makes itself.
BUILTIN_SERIES = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
)
#: PromQL's functions and aggregation operators (Prometheus 2.x).
# fmt: off
PROMQL_FUNCTIONS = frozenset((
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar",
    "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "acos",
    "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh",
    "deg", "pi", "rad", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile",
))
# fmt: on
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
#: Grafana's own variables, and what they are replaced with for promtool.
GRAFANA_VARIABLES = {
    "__range": "30d",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range_s": "2592000",
}
#: The expected dashboards.
#: The Prometheus job of the login node's exporter (prometheus-cluster.yml).
LOGIN_JOB = "ds01-slurm"
DASHBOARD_NAMES = {"admin-overview", "user-detail", "monthly-trends", "cluster"}
#: The collector's constructors of a metric family (name first), and the family's type.
FAMILY_TYPES = {
    "_gauge": "gauge",
    "GaugeMetricFamily": "gauge",
    "CounterMetricFamily": "counter",
    "HistogramMetricFamily": "histogram",
}
#: The series of a family of each type (Prometheus' exposition format).
SERIES_SUFFIXES = {
    "gauge": ("",),
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
}
#: The alerts the issue asks for.
ALERTS = {
    "DS01GPUAllocatedIdle",
    "DS01QueueWaitTooLong",
    "DS01UserAtQuotaForDays",
    "DS01ExporterDown",
    "DS01DaemonDown",
    "DS01AuditLogNotWritable",
}


# -- the contract and PromQL ----------------------------------------------------------------


def contract_metrics() -> dict[str, str]:
    """Metric name → type, from the table of docs/admin.md's "Metrics" section."""
    text = ADMIN_DOC.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    metrics: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`(ds01_[a-z0-9_]+)`", cells[0]):
            metrics[name] = cells[1]
    return metrics


def exporter_families() -> dict[str, str]:
    """Family name → type of every metric family ``ds01.metrics.collector`` (and the login
    node's ``ds01.metrics.slurm_queue``) makes: the first argument of each call that builds
    one, read from the modules' source (outside ``_gauge``, the helper that passes its own
    argument on)."""
    families: dict[str, str] = {}
    bodies = [
        n
        for path in (COLLECTOR, SLURM_QUEUE_COLLECTOR)
        for n in ast.parse(path.read_text(encoding="utf-8")).body
        if not (isinstance(n, ast.FunctionDef) and n.name in FAMILY_TYPES)
    ]
    for node in (found for body in bodies for found in ast.walk(body)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        kind = FAMILY_TYPES.get(node.func.id)
        if kind is None:
            continue
        first = node.args[0] if node.args else None
        assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
            f"collector.py:{node.lineno}: a family whose name is not a literal"
        )
        families[first.value] = kind
    return families


def exporter_series() -> dict[str, str]:
    """Series name → its family's type, of every series the exporter can expose."""
    return {
        name + suffix: kind
        for name, kind in exporter_families().items()
        for suffix in SERIES_SUFFIXES[kind]
    }


def recording_rules() -> set[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def allowed_series() -> set[str]:
    """Every series name a rule or dashboard may use."""
    return set(BUILTIN_SERIES) | recording_rules() | set(exporter_series())


def _strip(expr: str) -> str:
    """``expr`` without strings, label matchers, ranges, grouping labels and offsets."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\b(group_left|group_right)\b", "", expr)
    return re.sub(r"\boffset\s+-?[0-9]+[smhdwy]\b", "", expr)


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(series names, function names) in a PromQL expression."""
    text = _strip(expr)
    series, functions = set(), set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if name.lower() in KEYWORDS:
            continue
        (functions if call else series).add(name)
    return series, functions


def test_promql_name_extraction() -> None:
    series, functions = promql_names(
        'histogram_quantile(0.9, sum by (le) (rate(ds01_queue_wait_seconds_bucket{job="ds01",'
        'user=~"a|b"}[5m]))) > 2 * 60 and on (uuid) group_left (user) ds01_device_holder '
        'offset 3d or absent(up{job="ds01"}) unless (x:y:z[1d:5m])'
    )
    assert series == {"ds01_queue_wait_seconds_bucket", "ds01_device_holder", "up", "x:y:z"}
    assert functions == {"histogram_quantile", "sum", "rate", "absent"}


def test_the_contract_is_found_in_the_admin_guide() -> None:
    metrics = contract_metrics()
    assert {
        "ds01_build_info",
        "ds01_gpu_equivalents_allocated",
        "ds01_lifecycle_last_pass_timestamp_seconds",
        "ds01_audit_log_writable",
        "ds01_queue_wait_seconds",
        "ds01_device_memory_total_bytes",
    } <= set(metrics)
    assert metrics["ds01_queue_wait_seconds"] == "histogram"


def test_the_exporters_families_are_read_from_its_code() -> None:
    families = exporter_families()
    assert families["ds01_queue_wait_seconds"] == "histogram"
    assert families["ds01_oom_kills"] == "counter"
    assert families["ds01_user_containers"] == "gauge"
    series = exporter_series()
    assert {"ds01_oom_kills_total", "ds01_queue_wait_seconds_bucket"} <= set(series)
    assert "ds01_oom_kills" not in series  # a counter's series ends in _total


def test_every_metric_of_the_admin_guide_is_exported_with_its_type() -> None:
    # A counter by its series (``_total``), a histogram by its family.
    exported = {**exporter_series(), **exporter_families()}
    for name, kind in contract_metrics().items():
        assert exported.get(name) == kind, f"docs/admin.md: {name} ({kind}) is not exported so"


# -- Prometheus ---------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alerts_the_issue_asks_for_exist_with_severity_and_text() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == ALERTS
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name}: no `for:` (a single bad scrape would page)"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert 'up{job="ds01"} == 0' in alerts["DS01ExporterDown"]["expr"]
    assert "ds01_lifecycle_last_pass_timestamp_seconds" in alerts["DS01DaemonDown"]["expr"]


def test_rules_use_only_contract_metrics_and_promql_functions() -> None:
    allowed = allowed_series()
    for rule in rules():
        series, functions = promql_names(rule["expr"])
        name = rule.get("alert") or rule.get("record")
        assert series, name
        assert series <= allowed, f"{name}: unknown series {series - allowed}"
        assert functions <= PROMQL_FUNCTIONS, f"{name}: unknown functions"
    for record in recording_rules():
        assert re.fullmatch(r"ds01:[a-z0-9_]+:[a-z0-9_]+", record), record


def test_the_scrape_job_and_rule_files() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ds01"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9101"]
    assert config["rule_files"] == ["ds01-rules.yml"]


def test_the_cluster_scrapes_each_nodes_file_as_the_job_ds01() -> None:
    config = yaml.safe_load(CLUSTER_CONFIG.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ds01"]
    (pattern,) = job["file_sd_configs"][0]["files"]
    assert NODE_FILES and all(p.match(pattern) for p in NODE_FILES)
    assert config["rule_files"] == ["ds01-rules.yml"]
    for path in NODE_FILES:
        (group,) = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert group["labels"]["ds01_node"] == path.stem and len(group["targets"]) == 1
    # Slurm's queue: the login node's exporter, a job of its own (no node).
    (login,) = [j for j in config["scrape_configs"] if j["job_name"] == LOGIN_JOB]
    assert [t for c in login["static_configs"] for t in c["targets"]] == ["login:9102"]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        skip_or_fail("promtool is not installed: `make images` installs Debian's prometheus")
    assert path is not None
    return path


def run_promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_promtool_check_rules(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", RULES.name)
    assert f"SUCCESS: {len(rules())} rules found" in output


@pytest.mark.parametrize("config", [CONFIG, CLUSTER_CONFIG], ids=lambda p: p.name)
def test_promtool_check_config(promtool: str, config: Path) -> None:
    output = run_promtool(promtool, "check", "config", config.name)
    assert "is valid prometheus config file syntax" in output


def test_every_alert_fires_in_promtool_test_rules(promtool: str) -> None:
    """ds01-rules.test.yml raises each alert on a history that should, and not on others."""
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    assert tested == ALERTS
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", RULE_TESTS.name)


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """Each query as a recording rule, Grafana's variables filled in, through promtool."""
    queries = [q for d in DASHBOARDS for q in dashboard_queries(json.loads(d.read_text()))]
    assert len(queries) > 30
    rules_file = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}:check", "expr": fill_variables(q)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules_file), encoding="utf-8")
    run_promtool(promtool, "check", "rules", path.name, cwd=tmp_path)


# -- Grafana ------------------------------------------------------------------------------------


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def fill_variables(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_VARIABLES.get(name, "x")

    return re.sub(r"\$\{(\w+)[^}]*\}|\$(\w+)", value, expr)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    assert {d.stem for d in DASHBOARDS} == DASHBOARD_NAMES
    uids = [load(d)["uid"] for d in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_matches_the_schema(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(load(path))


def test_the_schema_refuses_what_grafana_would_not_show() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    good = load(DASHBOARDS[0])
    panel = next(p for p in good["panels"] if p["type"] != "row")
    broken = [
        {k: v for k, v in good.items() if k != "uid"},
        {**good, "panels": [{**panel, "gridPos": {"x": 0, "y": 0, "w": 25, "h": 4}}]},
        {**good, "panels": [{**panel, "targets": [{"refId": "A", "expr": ""}]}]},
        {**good, "panels": [{k: v for k, v in panel.items() if k != "title"}]},
        {**good, "panels": [{**panel, "type": "graph-that-does-not-exist"}]},
        {
            **good,
            "templating": {"list": [{"name": "user", "type": "query", "label": "U", "hide": 0}]},
        },
    ]
    for dashboard in broken:
        assert not validator.is_valid(dashboard)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_queries_use_only_contract_metrics(path: Path) -> None:
    allowed = allowed_series()
    dashboard = load(path)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            series, functions = promql_names(target["expr"])
            where = f"{path.stem}: panel {panel['title']!r}"
            assert series, f"{where}: no metric in {target['expr']!r}"
            assert series <= allowed, f"{where}: unknown series {series - allowed}"
            assert functions <= PROMQL_FUNCTIONS, f"{where}: unknown {functions}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((\w+)(?:\{[^}]*\})?,\s*(\w+)\)", query)
        assert match, f"{path.stem}: variable {variable['name']}: {query!r}"
        assert match.group(1) in allowed


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_are_laid_out_without_overlap(path: Path) -> None:
    panels = load(path)["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(set(refs)) == len(refs)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_variable_used_is_defined(path: Path) -> None:
    dashboard = load(path)
    defined = {v["name"] for v in dashboard["templating"]["list"]} | set(GRAFANA_VARIABLES)
    text = json.dumps(dashboard["panels"])
    used = {a or b for a, b in re.findall(r"\$\{(\w+)[^}]*\}|\$(\w+)", text)}
    used -= {"__value", "__url_time_range", "__data", "__field", "__series"}
    assert used <= defined, used - defined


def test_the_cluster_dashboard_is_per_node() -> None:
    dashboard = load(CLUSTER_DASHBOARD)
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "node" and variable["multi"] and variable["includeAll"]
    assert variable["definition"].endswith(", ds01_node)")
    queries = dashboard_queries(dashboard)
    # Each query per node, but those of Slurm's queue: the login node's exporter's.
    queue = [q for q in queries if f'job="{LOGIN_JOB}"' in q]
    queries = [q for q in queries if q not in queue]
    assert all('job="ds01", ds01_node=~"$node"' in q for q in queries), queries
    assert {"ds01_queue_length", "ds01_queue_oldest_wait_seconds"} <= set().union(
        *(promql_names(q)[0] for q in queue)
    )
    used = set().union(*(promql_names(q)[0] for q in queries + queue))
    # What the cluster view asks for: devices held and free, the queue, containers per
    # user, idle stops and OOM kills.
    assert {
        "ds01_device_holder", "ds01_device_info", "ds01_queue_length", "ds01_user_containers",
        "ds01_lifecycle_actions_total", "ds01_oom_kills_total",
    } <= used  # fmt: skip
    per_node = [q for q in queries if "by (ds01_node" in q]
    assert len(per_node) >= len(queries) - 6  # the first row's totals are the cluster's


def test_the_user_detail_dashboard_is_per_user() -> None:
    dashboard = load(DEPLOY / "grafana" / "dashboards" / "user-detail.json")
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "user" and variable["type"] == "query"
    queries = dashboard_queries(dashboard)
    assert queries and all('user="$user"' in q for q in queries), queries


def test_provisioning_points_at_the_dashboards_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "ds01.yml").read_text())
    (source,) = datasources["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", "ds01-prometheus")
    assert source["url"] == "http://127.0.0.1:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "ds01.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    for path in DASHBOARDS:
        text = path.read_text(encoding="utf-8")
        assert '"uid": "ds01-prometheus"' in text and "${DS_" not in text


# -- systemd --------------------------------------------------------------------------------------


def test_the_ds01d_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert service["ExecStart"] == "/opt/ds01/venv/bin/ds01d"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert "docker.service" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # Options that would take away what ds01d needs as root (see the unit's comment).
    for option in ("ProtectHome", "ProtectControlGroups", "ProtectKernelTunables",
                   "PrivateDevices", "DeviceAllow", "ProtectClock", "User"):  # fmt: skip
        assert option not in service, option
    # Options that give ds01d a mount namespace of its own: dockerd would not see the
    # staging mounts of users' directories (ds01.runtime.staging).
    for option in ("ProtectSystem", "ProtectKernelModules", "ProtectKernelLogs",
                   "ProtectHostname", "PrivateTmp", "PrivateMounts", "ReadWritePaths",
                   "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
                   "MountFlags"):  # fmt: skip
        assert option not in service, option


@pytest.mark.parametrize("unit", [UNIT, HUB_UNIT], ids=lambda path: path.name)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_or_fail("systemd-analyze is not installed: `make images` installs Debian's systemd")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    for problem in ("Unknown key", "Unknown section", "Invalid", "Failed to parse"):
        assert problem not in output, output
