"""Route rtpcore's loggers into Prefect's run logs, with secrets redacted on the way."""
from __future__ import annotations

import logging
import os

# Must be set before Prefect configures logging (first prefect import in the process).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "rtpcore")


def install_redaction() -> None:
    """Attach rtpcore's redaction filter to every handler Prefect installed (API and console)."""
    from rtpcore.logs import RedactFilter

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "rtpcore", ""):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())
