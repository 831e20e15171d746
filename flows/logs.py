"""Logging for flows run from the CLI: a user error is one line, not a traceback; no library chatter.

Prefect logs every task and flow exception with its traceback. For errors that describe bad input
(a dataset that breaks the contract, a bad option) the traceback only buries the message, so a
handler filter drops it for those exception types and keeps the log line itself. Bugs keep theirs.
"""

from __future__ import annotations

import logging


class _CliLogFilter(logging.Filter):
    def __init__(self, user_errors: tuple[type[BaseException], ...]):
        super().__init__()
        self.user_errors = user_errors

    def filter(self, record: logging.LogRecord) -> bool:
        # Great Expectations announces its temporary docs folder at INFO on every context
        if record.name.startswith("great_expectations") and record.levelno < logging.WARNING:
            return False
        if record.exc_info and isinstance(record.exc_info[1], self.user_errors):
            record.exc_info, record.exc_text = None, None
        return True


def tidy_cli_logs(user_errors: tuple[type[BaseException], ...]) -> None:
    """Attach the filter to every handler of Prefect's loggers (call after Prefect is imported)."""
    flt = _CliLogFilter(user_errors)
    names = [n for n in logging.root.manager.loggerDict if n == "prefect" or n.startswith("prefect.")]
    for logger in [logging.getLogger(n) for n in names] + [logging.root]:
        for handler in logger.handlers:
            if not any(isinstance(f, _CliLogFilter) for f in handler.filters):
                handler.addFilter(flt)
