"""Prometheus metrics at ``GET /metrics``: what operators graph and alert on.

Nothing on a request's path records anything for them. Every value is read when the
endpoint is scraped, from state the service keeps anyway: a market writer's journal
head, queue and cycle counters, the feeds' subscribers, the settlement backlog (one
query per scrape). Parts of the service add their sources from their lifespan hooks with
:func:`register_metrics`; the process's own (CPU, memory, open files, garbage
collections) are always there.

``EXCHANGE_METRICS=false`` leaves the endpoint out (404). With ``EXCHANGE_METRICS_TOKEN``
set, a scrape must send ``Authorization: Bearer <token>`` (401 otherwise): the figures
say how busy each market is, which an operator may not want public.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exchange.kit.errors import NotFound, Unauthorized
from exchange.settings import Settings

MetricSource = Callable[[], Awaitable[Iterable[Metric]]]
"""Returns the metric families of one part of the service, as they are now."""

router = APIRouter(tags=["system"])


class _Families:
    """A collector of families read beforehand (the sources are async, collectors are not)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _process_families() -> list[Metric]:
    registry = CollectorRegistry(auto_describe=False)
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    return list(registry.collect())


def register_metrics(app: FastAPI, name: str, source: MetricSource) -> None:
    """Add ``source`` to ``GET /metrics`` under ``name``; call it from a lifespan hook."""
    sources: dict[str, MetricSource] = app.state.metric_sources
    if name in sources:
        raise ValueError(f"metrics named {name!r} are already registered")
    sources[name] = source


def _family(
    kind: type[GaugeMetricFamily | CounterMetricFamily],
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    values: Iterable[Any],
) -> Metric:
    family = kind(name, documentation, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def gauge(name: str, documentation: str, labels: tuple[str, ...], values: Iterable[Any]) -> Metric:
    """A gauge family from ``(label values, value)`` pairs."""
    return _family(GaugeMetricFamily, name, documentation, labels, values)


def counter(name: str, documentation: str, labels: tuple[str, ...], values: Iterable[Any]) -> Metric:
    """A counter family (``name`` without ``_total``) from ``(label values, value)`` pairs."""
    return _family(CounterMetricFamily, name, documentation, labels, values)


def _authorised(settings: Settings, authorization: str | None) -> bool:
    if settings.metrics_token is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The metrics in Prometheus's text format."""
    settings: Settings = request.app.state.settings
    if not settings.metrics:
        raise NotFound("metrics are not served (EXCHANGE_METRICS=false)")
    if not _authorised(settings, request.headers.get("authorization")):
        raise Unauthorized("send 'Authorization: Bearer <EXCHANGE_METRICS_TOKEN>'")
    families = _process_families()
    for source in request.app.state.metric_sources.values():
        families.extend(await source())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
