"""Process-wide Prefect defaults (import this module before prefect) and the logging every flow run starts with."""
from __future__ import annotations

import logging
import os
from pathlib import Path

# No telemetry: the machines have no internet, and on a SQLite-backed ephemeral server its
# writes race the first flow run ("database is locked").
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.context import FlowRunContext, TaskRunContext  # noqa: E402  (after the defaults above)
from prefect.logging.handlers import APILogHandler  # noqa: E402
from prefect.logging import get_run_logger  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

from rtpcore.errors import RtpCoreError  # noqa: E402
from rtpcore.logs import RedactFilter, set_correlation_id, setup_logging  # noqa: E402
from rtpcore.settings import load_settings  # noqa: E402

RUN_LOG_HANDLER_NAME = "rtpcore.prefect-api"
# Loggers whose lines belong in the run's logs in the UI (Prefect's own loggers already send theirs).
RUN_LOGGERS = ("rtpcore",)
PREFECT_HANDLER_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra", "")


class RunLogHandler(APILogHandler):
    """Prefect's API handler for rtpcore: lines from rtpcore's own threads (no Prefect context) go to this run."""

    def __init__(self, flow_run_id: str) -> None:
        super().__init__()
        self.flow_run_id = flow_run_id
        self.set_name(RUN_LOG_HANDLER_NAME)

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "flow_run_id", None) and FlowRunContext.get() is None and TaskRunContext.get() is None:
            record.flow_run_id = self.flow_run_id
        super().emit(record)


def install_redaction() -> None:
    """Attach rtpcore's redaction filter to every handler Prefect installed (API and console)."""
    for name in PREFECT_HANDLER_LOGGERS + RUN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())


def attach_run_logs(flow_run_id: str) -> None:
    """Send rtpcore's lines to this run's logs: a worker's run process configured logging before our imports.

    PREFECT_LOGGING_EXTRA_LOGGERS only works when set before Prefect sets logging up, which a process
    worker's run subprocess has already done by the time the flow module is imported; so the handler
    is attached here, explicitly, replacing any earlier one (no duplicate lines).
    """
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, APILogHandler)]:
            logger.removeHandler(handler)
        logger.addHandler(RunLogHandler(flow_run_id))


def begin_flow_run() -> Path | None:
    """First line of every flow body: logs/app.log on disk, rtpcore lines in the run's UI logs, secrets redacted."""
    run_id, run_name = flow_run.get_id(), flow_run.get_name()
    set_correlation_id(run_name or run_id)
    if run_id:
        attach_run_logs(run_id)
    install_redaction()
    try:
        settings = load_settings()
    except RtpCoreError as exc:  # the flow's own steps fail on it with the same message; the run logs still work
        logging.getLogger("rtpcore.logs").warning("no logs/app.log for this run: %s", exc)
        return None
    try:
        return setup_logging(settings, console=False)  # Prefect's console handler prints already
    except OSError as exc:
        logging.getLogger("rtpcore.logs").warning(
            "cannot write %s/app.log (%s): set RTPHELPER_LOG_DIR to a writable folder", settings.log_dir, exc.strerror)
        return None


def fail_run(message: str, data: object = None) -> State:
    """End a flow run Failed with one error line in its logs: a user error needs no traceback on the run page."""
    get_run_logger().error("%s", message)
    return Failed(message=message, data=data)
