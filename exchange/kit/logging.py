"""Logging: structlog for our events, the standard library's records routed through it.

Call :func:`configure_logging` once, at process start (the ``serve`` entry point
does). Modules then log with ``structlog.get_logger(__name__)`` and name events
``area.action`` with ids as fields::

    log.info("deployment.recorded", chain_id=chain_id, deployment_id=row.id)

Records from the standard library (uvicorn, SQLAlchemy, Alembic, web3) go
through the same processors and renderer, so a process writes one format to
stderr: a console renderer on a terminal, one JSON object per line otherwise.
Uvicorn's access records become ``http.request`` events with the client,
method, path and status as fields.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal, TextIO, get_args

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def _uvicorn_access_fields(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Turn uvicorn's ``'%s - "%s %s HTTP/%s" %d'`` access record into named fields."""
    positional_args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if (
        isinstance(record, logging.LogRecord)
        and record.name == "uvicorn.access"
        and isinstance(positional_args, tuple)
        and len(positional_args) == 5
    ):
        client, method, path, http_version, status = positional_args
        event_dict.update(
            event="http.request",
            client=client,
            method=method,
            path=path,
            http_version=http_version,
            status=status,
        )
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def resolve_format(log_format: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    """``auto`` means console on a terminal, JSON for files, pipes and collectors."""
    if log_format == "auto":
        return "console" if stream.isatty() else "json"
    return log_format


def configure_logging(
    *,
    log_format: LogFormat = "auto",
    log_level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's root logger for this process.

    Calling it again replaces the previous configuration (no duplicate handlers).
    """
    output = stream if stream is not None else sys.stderr
    shared = _shared_processors()
    renderer: Processor
    final: Sequence[Processor]
    if resolve_format(log_format, output) == "console":
        # ConsoleRenderer formats exceptions itself; format_exc_info would flatten them first.
        # Without local variables, as in JSON: they can hold keys, and rendering them (an app,
        # web3, a book) held the event loop for seconds per logged error.
        colors = output.isatty()
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors,
            exception_formatter=(
                structlog.dev.RichTracebackFormatter(
                    color_system="truecolor" if colors else None, show_locals=False
                )
                if importlib.util.find_spec("rich") is not None
                else structlog.dev.plain_traceback
            ),
        )
        final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    else:
        renderer = structlog.processors.JSONRenderer()
        final = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Structured tracebacks without local variables: locals can hold keys and passwords.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _uvicorn_access_fields],
        processors=final,
        pass_foreign_args=True,
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    root.addHandler(handler)
    root.setLevel(log_level.upper())

    # Uvicorn installs its own handlers unless started with log_config=None; either
    # way its records must reach the root handler exactly once.
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests reconfigure (capture_logs) after loggers were first used.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A typed structlog logger; ``name`` is normally the module's ``__name__``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
