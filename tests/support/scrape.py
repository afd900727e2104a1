"""Reading a Prometheus endpoint as Prometheus does: an HTTP GET of /metrics, parsed by prometheus_client's parser."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import wait_until


@dataclass(frozen=True)
class Samples:
    """One scrape: sample name -> [(labels, value)]."""

    by_name: dict[str, list[tuple[dict[str, str], float]]]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when the series does not exist yet)."""
        return next((v for found, v in self.by_name.get(name, []) if found == labels), 0.0)

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return list(self.by_name.get(name, []))


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return Samples(by_name)


def scrape_until(url: str, settled: Callable[[Samples], bool], timeout: float, step: float = 0.05) -> Samples:
    """The first scrape for which ``settled`` holds, or the last one at ``timeout`` (what the asserts then see)."""
    seen: list[Samples] = []
    wait_until(lambda: seen.append(scrape(url)) or settled(seen[-1]), timeout, step=step)
    return seen[-1]


def logged_endpoint(log: Path, what: str, timeout: float = 30) -> str:
    """The metrics URL a program logged as ``... metrics on http://HOST:PORT/metrics`` (port 0 picks one)."""
    pattern = re.compile(rf"{re.escape(what)} on (http://[^\s]+/metrics)")
    found: list[str] = []
    wait_until(lambda: found.extend(pattern.findall(log.read_text(errors="replace"))) or found, timeout, step=0.1)
    assert found, f"no '{what}' line in {log}:\n{log.read_text(errors='replace')[-3000:]}"
    return found[0]
