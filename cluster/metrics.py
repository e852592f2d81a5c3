"""Prometheus text exposition (format 0.0.4), written by hand: counters, gauges, histograms.

Why not `prometheus_client`: a node needs a handful of metrics in one process, no push
gateway, no multiprocess mode; the text format is small and stable, and a registry of our own
also lets `/metrics` pull live values (transport counters, engine state) at scrape time through
collectors instead of mirroring them on every change.

A metric with labels keeps one child per label-value tuple. Names follow Prometheus
conventions: counters end in `_total`, units are seconds and bytes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

Labels = tuple[str, ...]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)


@dataclass(slots=True)
class Family:
    """One metric family as rendered: `samples` are (name suffix, label pairs, value)."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, tuple[tuple[str, str], ...], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, tuple(labels.items()), value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.label_names = tuple(labels)

    def _key(self, values: Sequence[str]) -> Labels:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name}: expected labels {self.label_names}, got {values}")
        return tuple(values)

    def family(self) -> Family:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def family(self) -> Family:
        out = Family(self.name, self.kind, self.help)
        for key, value in sorted(self._values.items()):
            out.samples.append(("", tuple(zip(self.label_names, key, strict=True)), value))
        return out


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self._values[self._key(labels)] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help, labels)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: buckets must be distinct and increasing")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (len(self.buckets) + 1)
            self._sums[key] = 0.0
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sums[key] += value

    def count(self, *labels: str) -> int:
        return sum(self._counts.get(self._key(labels), ()))

    def family(self) -> Family:
        out = Family(self.name, self.kind, self.help)
        for key in sorted(self._counts):
            pairs = tuple(zip(self.label_names, key, strict=True))
            cumulative = 0
            counts = self._counts[key]
            for bound, n in zip([*self.buckets, math.inf], counts, strict=True):
                cumulative += n
                out.samples.append(("_bucket", (*pairs, ("le", _number(bound))), cumulative))
            out.samples.append(("_sum", pairs, self._sums[key]))
            out.samples.append(("_count", pairs, cumulative))
        return out


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """Metrics owned here plus collectors asked for their families at each scrape."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        self._collectors: list[Callable[[], Iterable[Family]]] = []

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help, labels))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help, labels))

    def histogram(
        self,
        name: str,
        help: str,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        labels: Sequence[str] = (),
    ) -> Histogram:
        return self._register(Histogram(name, help, buckets, labels))

    def collector(self, collect: Callable[[], Iterable[Family]]) -> None:
        self._collectors.append(collect)

    def _register(self, metric: _M) -> _M:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics.append(metric)
        return metric

    def families(self) -> list[Family]:
        out = [metric.family() for metric in self._metrics]
        for collect in self._collectors:
            out.extend(collect())
        return out

    def render(self) -> str:
        return render(self.families())


def render(families: Iterable[Family]) -> str:
    """The text exposition format: HELP and TYPE once per family, then its samples."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            if labels:
                text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                lines.append(f"{family.name}{suffix}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{family.name}{suffix} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
