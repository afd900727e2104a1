"""docs/grafana-dashboard.json shows every metric the workers and fasp-server export, and asks for no other."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import fasp.server.metrics
import workers.metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


def _exported() -> dict[str, set[str]]:
    """Metric family -> the sample names it may export (``_total``, ``_bucket``...), for both modules."""
    families: dict[str, set[str]] = {}
    for module in (workers.metrics, fasp.server.metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                name = metric.describe()[0].name
                families[name] = {name, *(name + suffix for suffix in ("_total", "_bucket", "_sum", "_count"))}
    return families


def test_every_metric_has_a_panel_and_every_panel_a_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    asked = set(re.findall(r"\b(?:faspq|fasp_server)_[a-z_]+", " ".join(exprs)))
    families = _exported()
    assert len(families) == 12  # 8 of the workers, 4 of fasp-server
    missing = [name for name, samples in families.items() if not samples & asked]
    assert not missing, f"no panel for {missing}"
    unknown = asked - set().union(*families.values())
    assert not unknown, f"panels ask for metrics nobody exports: {unknown}"
