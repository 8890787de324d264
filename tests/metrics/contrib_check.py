#!/usr/bin/env python3
"""Checks of the metrics' companions against the metric set (suite metrics).

The metric set is read from src/metrics/metrics.cpp (every BuildCounter /
BuildGauge / BuildHistogram with its .Name), plus the six process metrics
every Prometheus exporter has. Sub-commands:

  dashboard DASHBOARD METRICS_CPP   the Grafana dashboard: its JSON model, its
                                    datasource input, its layout, the metric
                                    names in its PromQL, and every expression
                                    parsed by `promtool check rules`
  rules ALERTS METRICS_CPP          the metric names in the alert rules
  docs DOC METRICS_CPP              docs/metrics.md documents every metric and
                                    names no metric that does not exist
  scrape TEXT OPENMETRICS METRICS_CPP AGENTS_LIVE AGENTS_GONE
                                    one live supervisor's /metrics in both
                                    formats (see metrics_scrape_test.sh)
  live PROMETHEUS_URL DASHBOARD ALERTS
                                    every dashboard expression and alert rule
                                    evaluated by a real Prometheus that scrapes
                                    a live supervisor (prometheus_scrape_test.sh)
  target PROMETHEUS_URL INSTANCE    that Prometheus's one agentvisor target is
                                    INSTANCE, healthy, with no lastError

Exit status: 0 all checks passed, 1 a check failed (each failure printed on
a line starting with FAIL), 77 a tool the check needs is missing.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

# The process metrics, collected at scrape time (metrics::process_families).
PROCESS_METRICS = {
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")

failures = []



# Metrics with series only for agents of one backend: name -> where tested.
BACKEND_SPECIFIC = {
    "agentvisor_agent_machine_available_bytes":
        "qemu agents only (tests/microvm qemu_boot, tests/metrics metric_set)",
}

def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def finish(checked):
    print(f"{checked} checked, {len(failures)} failed")
    sys.exit(1 if failures else 0)


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def metric_set(metrics_cpp):
    """{name: type} of the registry's families, and the process metrics."""
    src = open(metrics_cpp, encoding="utf-8").read()
    found = re.findall(r'Build(Counter|Gauge|Histogram)\(\)\s*\.Name\("([^"]+)"\)', src)
    if len(found) < 10:
        fail(f"{metrics_cpp}: found only {len(found)} metric families; has its layout changed?")
        finish(0)
    out = {name: kind.lower() for kind, name in found}
    out.update(PROCESS_METRICS)
    return out


def per_agent_families(metrics_cpp):
    """The families whose help says they are per agent (metrics.per_agent)."""
    src = open(metrics_cpp, encoding="utf-8").read()
    return [n for n, h in re.findall(r'\.Name\("([^"]+)"\)\s*\.Help\("([^"]*)"', src)
            if "metrics.per_agent" in h]


def series_names(metrics):
    """Every sample name the set exposes, mapped to its family."""
    out = {}
    for name, kind in metrics.items():
        if kind == "histogram":
            for part in HISTOGRAM_PARTS:
                out[name + part] = name
        else:
            out[name] = name
    return out


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def names_in(expr):
    """Metric names a PromQL expression selects (ours, process_*, up)."""
    return set(re.findall(r"\b((?:agentvisor|process)_[a-zA-Z0-9_]+|up)\b(?!\s*\()",
                          strip_strings(expr)))


def check_promql_names(where, expr, metrics):
    """The names exist; rate-like functions take counters; histogram_quantile
    takes buckets grouped by le."""
    known = series_names(metrics)
    checks = 0
    for n in sorted(names_in(expr)):
        checks += 1
        if n != "up" and n not in known:
            fail(f"{where}: {n} is not a metric of the set (src/metrics/metrics.cpp): {expr}")
    bare = strip_strings(expr)
    for fn, n in re.findall(r"\b(rate|irate|increase|resets)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", bare):
        fam = known.get(n)
        if fam and metrics[fam] == "gauge":
            fail(f"{where}: {fn}() of the gauge {n}: {expr}")
    for fn, n in re.findall(r"\b(delta|idelta|deriv)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", bare):
        fam = known.get(n)
        if fam and metrics[fam] != "gauge":
            fail(f"{where}: {fn}() of the {metrics[fam]} {n} (for gauges only): {expr}")
    for m in re.finditer(r"\bhistogram_quantile\s*\(", bare):
        depth, i = 1, m.end()
        while i < len(bare) and depth:
            depth += {"(": 1, ")": -1}.get(bare[i], 0)
            i += 1
        arg = bare[m.end():i]
        if "_bucket" not in arg:
            fail(f"{where}: histogram_quantile over no _bucket series: {expr}")
        for grp in re.findall(r"\bby\s*\(([^)]*)\)", arg):
            if "le" not in [g.strip() for g in grp.split(",")]:
                fail(f"{where}: histogram_quantile's aggregation drops le (by ({grp})): {expr}")
    return checks


def promtool():
    p = shutil.which("promtool")
    if not p:
        skip("promtool is not installed (Debian package prometheus; scripts/install-deps installs it)")
    return p


def promtool_parse(exprs):
    """Parses every (label, expr) with `promtool check rules` on a throwaway
    rules file (JSON is YAML); returns the number checked."""
    tool = promtool()
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dashboard_rules.yml")
        with open(path, "w") as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
        r = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True)
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        for i, (where, e) in enumerate(exprs):
            if f"dashboard:expr_{i}\"" in out or f"rule {i + 1}," in out:
                fail(f"{where}: promtool cannot parse {e}")
        fail("promtool check rules on the dashboard's expressions:\n" + out)
    return len(exprs)


# --- the dashboard ---------------------------------------------------------------

# Grafana's variables, replaced by what a query would see.
VARIABLES = {"job": "agentvisor", "instance": ".*", "__rate_interval": "1m",
             "__interval": "1m", "__range": "1h"}


def substitute(where, expr, variables=VARIABLES):
    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in variables:
            fail(f"{where}: unknown variable ${name} in {expr}")
            return m.group(0)
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def dashboard_queries(dash, variables=VARIABLES):
    """[(where, expr)] of every panel target and variable query, substituted."""
    out = []
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            where = f"panel {p.get('id')} \"{p.get('title')}\" target {t.get('refId')}"
            out.append((where, substitute(where, t.get("expr", ""), variables)))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        where = f"variable ${v.get('name')}"
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not m:
            fail(f"{where}: expected label_values(SELECTOR, LABEL), got {q!r}")
            continue
        out.append((where, substitute(where, m.group(1), variables)))
    return out


def check_dashboard(path, metrics_cpp):
    metrics = metric_set(metrics_cpp)
    try:
        dash = json.load(open(path, encoding="utf-8"))
    except ValueError as e:
        fail(f"{path} is not valid JSON: {e}")
        finish(0)
    checks = 0
    ds = "${DS_PROMETHEUS}"

    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        checks += 1
        if key not in dash:
            fail(f"the dashboard has no {key}")
    checks += 1
    if dash.get("id") is not None:
        fail("the dashboard's id must be null so that an import creates it")
    checks += 1
    if not any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource"
               and i.get("pluginId") == "prometheus" for i in dash.get("__inputs", [])):
        fail("__inputs lacks the DS_PROMETHEUS datasource input (pluginId prometheus)")

    # Every datasource reference is the input variable (or Grafana's built-in
    # annotation source): no uid of someone's own Grafana.
    def refs(node, at):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource":
                    yield at, v
                else:
                    yield from refs(v, at + "." + k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from refs(v, f"{at}[{i}]")
    for at, ref in refs(dash, "$"):
        checks += 1
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        if uid == "-- Grafana --" and at.startswith("$.annotations"):
            continue
        if uid != ds or (isinstance(ref, dict) and ref.get("type") != "prometheus"):
            fail(f"{at}: datasource {ref!r}, expected {{\"type\": \"prometheus\", \"uid\": \"{ds}\"}}")

    # Panels: unique ids, inside the 24-column grid, no two overlapping, and
    # every non-row panel has at least one target with an expression.
    ids, cells = set(), {}
    for p in walk_panels(dash.get("panels", [])):
        checks += 1
        pid, title = p.get("id"), p.get("title", "")
        if pid in ids:
            fail(f"panel id {pid} (\"{title}\") is used twice")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")):
            fail(f"panel {pid} \"{title}\": gridPos needs integer h, w, x, y: {g}")
            continue
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            fail(f"panel {pid} \"{title}\": gridPos {g} leaves the 24-column grid")
        for y in range(g["y"], g["y"] + g["h"]):
            for x in range(g["x"], g["x"] + g["w"]):
                if (x, y) in cells:
                    fail(f"panel {pid} \"{title}\" overlaps panel {cells[(x, y)]} at ({x}, {y})")
                    break
                cells[(x, y)] = pid
        if p.get("type") == "row":
            continue
        if p.get("type") not in ("timeseries", "stat", "gauge", "bargauge", "table", "heatmap"):
            fail(f"panel {pid} \"{title}\": unexpected type {p.get('type')!r}")
        tgts = p.get("targets", [])
        if not tgts or not all(t.get("expr", "").strip() for t in tgts):
            fail(f"panel {pid} \"{title}\" has a target without an expression")
        refids = [t.get("refId") for t in tgts]
        if len(set(refids)) != len(refids):
            fail(f"panel {pid} \"{title}\": refIds repeat: {refids}")

    queries = dashboard_queries(dash)
    used = set()
    for where, expr in queries:
        checks += check_promql_names(where, expr, metrics)
        used |= {series_names(metrics).get(n) for n in names_in(expr)}
    # The dashboard shows the whole set: a metric added to metrics.cpp
    # without a panel fails here.
    for name in sorted(metrics):
        checks += 1
        if name not in used:
            fail(f"no dashboard panel shows {name}")
    checks += promtool_parse(queries)
    finish(checks)


# --- the alert rules ------------------------------------------------------------------

def load_yaml(path):
    try:
        import yaml
    except ImportError:
        skip("python3-yaml is not installed")
    return yaml.safe_load(open(path, encoding="utf-8"))


def check_rules(path, metrics_cpp):
    metrics = metric_set(metrics_cpp)
    checks = 0
    for g in load_yaml(path)["groups"]:
        for r in g["rules"]:
            where = f"{path}: {r.get('alert') or r.get('record')}"
            checks += check_promql_names(where, r["expr"], metrics)
            if "alert" in r:
                checks += 1
                if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    fail(f"{where}: severity label missing or not critical/warning/info")
                if "for" not in r:
                    fail(f"{where}: no for:")
                for a in ("summary", "description"):
                    if not r.get("annotations", {}).get(a):
                        fail(f"{where}: no {a} annotation")
    finish(checks)


# --- the docs -------------------------------------------------------------------------------

def check_docs(path, metrics_cpp):
    metrics = metric_set(metrics_cpp)
    text = open(path, encoding="utf-8").read()
    checks = 0
    for name in sorted(metrics):
        checks += 1
        if not re.search(r"^\|\s*`" + re.escape(name) + r"`", text, re.M):
            fail(f"{path} has no table row for {name}")
    # Names the page mentions exist: a metric's samples, or a counter's
    # OpenMetrics family name (without _total).
    allowed = set(series_names(metrics)) | set(metrics)
    allowed |= {n[:-len("_total")] for n, k in metrics.items() if k == "counter"}
    for n in sorted(set(re.findall(r"\b(agentvisor_[a-z0-9_]*[a-z0-9])\b", text))):
        checks += 1
        if n not in allowed:
            fail(f"{path} mentions {n}, which is not a metric of the set")
    finish(checks)


# --- a live scrape in both formats -------------------------------------------------------

def parse_samples(families):
    out = {}
    for fam in families:
        for s in fam.samples:
            labels = dict(s.labels)
            for k in ("le", "quantile"):
                if k in labels:
                    labels[k] = repr(float(labels[k]))
            out[(s.name, tuple(sorted(labels.items())))] = (fam.type, s.value)
    return out


def check_scrape(text_path, om_path, metrics_cpp, live, gone):
    """text_path: the text format answer; om_path: the OpenMetrics answer;
    live / gone: comma-separated agent ids with and without series."""
    metrics = metric_set(metrics_cpp)
    text = open(text_path, encoding="utf-8").read()
    om = open(om_path, encoding="utf-8").read()
    checks = 0
    try:
        from prometheus_client.parser import text_string_to_metric_families
        from prometheus_client.openmetrics.parser import \
            text_string_to_metric_families as om_families
    except ImportError:
        skip("python3-prometheus-client is not installed (scripts/install-deps installs it)")

    try:
        text_samples = parse_samples(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others
        fail(f"the text format does not parse: {e}")
        finish(1)
    try:
        # The OpenMetrics authors' reference parser: strict about # EOF,
        # _total, units, bucket order, escaping and number syntax.
        om_samples = parse_samples(om_families(om))
    except Exception as e:
        fail(f"the OpenMetrics answer does not parse (prometheus_client): {e}")
        finish(1)

    # Every metric of the set is served, in both formats, but those whose
    # series exist only for agents of a backend this scrape does not run
    # (the supervisor here runs sandboxes; the metric's test is elsewhere).
    for fmt, samples in (("text", text_samples), ("OpenMetrics", om_samples)):
        served = {n for n, _ in samples}
        for name, kind in sorted(metrics.items()):
            if name in BACKEND_SPECIFIC:
                continue
            checks += 1
            want = name + "_count" if kind == "histogram" else name
            if want not in served:
                fail(f"{fmt}: no {want} sample")

    # The two formats carry the same series (a _created sample is
    # OpenMetrics-only, and a counter's values cannot differ between two
    # scrapes when nothing happened in between).
    ours = lambda k: k[0].startswith("agentvisor_")
    t_keys = {k for k in text_samples if ours(k)}
    o_keys = {k for k in om_samples if ours(k) and not k[0].endswith("_created")}
    checks += 1
    for k in sorted(t_keys - o_keys)[:10]:
        fail(f"in the text format, not in OpenMetrics: {k[0]}{dict(k[1])}")
    for k in sorted(o_keys - t_keys)[:10]:
        fail(f"in OpenMetrics, not in the text format: {k[0]}{dict(k[1])}")
    for name in ("agentvisor_spawns_total", "agentvisor_tool_calls_total"):
        for k in sorted(t_keys & o_keys):
            if k[0] == name:
                checks += 1
                if text_samples[k][1] != om_samples[k][1]:
                    fail(f"{name}{dict(k[1])}: {text_samples[k][1]} in text, {om_samples[k][1]} in OpenMetrics")

    # Per-agent series: present for the live agents, gone with the others.
    per_agent = per_agent_families(metrics_cpp)
    checks += 1
    if not per_agent:
        fail(f"{metrics_cpp}: no family's help mentions metrics.per_agent")
    agent_of = {}
    for (name, labels) in text_samples:
        d = dict(labels)
        if name in per_agent and "agent" in d:
            agent_of.setdefault(d["agent"], set()).add(name)
    for a in filter(None, live.split(",")):
        checks += 1
        missing = set(per_agent) - agent_of.get(a, set())
        if missing:
            fail(f"agent {a} is alive but has no {', '.join(sorted(missing))} series")
    for a in filter(None, gone.split(",")):
        checks += 1
        if a in agent_of:
            fail(f"agent {a} is gone but still has {', '.join(sorted(agent_of[a]))} series")
    finish(checks)


# --- a real Prometheus ----------------------------------------------------------------------

def query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}") or {"status": "error", "error": str(e)}


def check_live(base, dashboard, alerts):
    """Every dashboard expression returns series from the scraped supervisor
    (so its names and label values are the real ones) and every alert rule
    evaluates without an error (vector matching, types)."""
    checks = 0
    dash = json.load(open(dashboard, encoding="utf-8"))
    for where, expr in dashboard_queries(dash):
        checks += 1
        if where.startswith("variable"):
            expr = f"count({expr})"
        r = query(base, expr)
        if r.get("status") != "success":
            fail(f"{where}: Prometheus refused {expr}: {r.get('error')}")
        elif r["data"]["resultType"] == "vector" and not r["data"]["result"] \
                and not any(name in expr for name in BACKEND_SPECIFIC):
            # (A panel of a backend-specific metric: the query must be
            # accepted; its series need agents of that backend.)
            fail(f"{where}: no series for {expr}")
    for g in load_yaml(alerts)["groups"]:
        for rule in g["rules"]:
            checks += 1
            r = query(base, rule["expr"])
            if r.get("status") != "success":
                fail(f"alert {rule.get('alert')}: Prometheus refused its expression: {r.get('error')}")
            # Every selector of the rule matches series of the live target.
            for sel in re.findall(r"\b((?:agentvisor|process)_[a-zA-Z0-9_]+(?:\{[^}]*\})?|up\{[^}]*\})",
                                  rule["expr"]):
                checks += 1
                r = query(base, f"count({sel})")
                if r.get("status") != "success" or not r["data"]["result"]:
                    fail(f"alert {rule.get('alert')}: its selector {sel} matches no series")
    finish(checks)


def check_target(base, instance):
    """Prometheus has one target in job agentvisor, at `instance`, healthy
    and with no lastError; prints what it says about it."""
    with urllib.request.urlopen(base + "/api/v1/targets", timeout=10) as r:
        data = json.load(r)["data"]
    ours = [t for t in data["activeTargets"] if t["labels"].get("job") == "agentvisor"]
    if len(ours) != 1:
        fail(f"expected one target in job agentvisor, got {len(ours)}: "
             f"{[t['labels'] for t in data['activeTargets']]}")
        finish(1)
    t = ours[0]
    print(f"target {t['labels'].get('instance')}: health {t['health']}, "
          f"lastError {t['lastError']!r}, last scrape {t['lastScrape']}")
    if t["labels"].get("instance") != instance:
        fail(f"instance {t['labels'].get('instance')}, expected {instance}")
    if t["health"] != "up":
        fail(f"health {t['health']}, expected up")
    if t["lastError"]:
        fail(f"lastError {t['lastError']!r}")
    finish(3)


def main(argv):
    cmds = {"dashboard": (check_dashboard, 2), "rules": (check_rules, 2), "docs": (check_docs, 2),
            "scrape": (check_scrape, 5), "live": (check_live, 3), "target": (check_target, 2)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    cmds[argv[1]][0](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
