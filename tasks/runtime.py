"""Process-wide Prefect defaults: set before the first `import prefect`, so import this module first."""
from __future__ import annotations

import logging
import os

# rtpcore's own loggers go into the flow-run logs shown in the Prefect UI.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "rtpcore")
# No telemetry: the machines have no internet, and on a SQLite-backed ephemeral server its
# writes race the first flow run ("database is locked").
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def install_redaction() -> None:
    """Attach rtpcore's redaction filter to every handler Prefect installed (API and console)."""
    from rtpcore.logs import RedactFilter

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "rtpcore", ""):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())


# Prefect attaches its handlers to extra loggers but leaves their level to the root's (WARNING).
logging.getLogger("rtpcore").setLevel(os.environ.get("RTPHELPER_LOG_LEVEL", "INFO").upper())
