"""Logging for flows run from the CLI: a user error is one line, not a traceback; no library chatter.

Prefect logs every task and flow exception with its traceback, four lines per error. For errors that
describe bad input (a dataset that breaks the contract, a bad option) those lines only repeat the
message the CLI prints once as `error: ...`, so a handler filter drops them for those exception
types. Bugs keep their log lines and tracebacks.
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
        # a user error is printed once, as the CLI's own `error:` line: Prefect's task-failed,
        # finished-in-state-Failed and flow-exception lines would repeat it four times (issue 27)
        if record.exc_info and isinstance(record.exc_info[1], self.user_errors):
            return False
        if record.name.startswith("prefect") and record.levelno >= logging.INFO:
            message = record.getMessage()
            about_failure = "Failed(" in message or "exception" in message
            names = (f"{e.__name__}{sep}" for e in self.user_errors for sep in ("(", ":"))
            if about_failure and any(n in message for n in names):
                return False
        return True


def tidy_cli_logs(user_errors: tuple[type[BaseException], ...]) -> None:
    """Attach the filter to every handler of Prefect's loggers (call after Prefect is imported)."""
    flt = _CliLogFilter(user_errors)
    names = [n for n in logging.root.manager.loggerDict if n == "prefect" or n.startswith("prefect.")]
    for logger in [logging.getLogger(n) for n in names] + [logging.root]:
        for handler in logger.handlers:
            if not any(isinstance(f, _CliLogFilter) for f in handler.filters):
                handler.addFilter(flt)
