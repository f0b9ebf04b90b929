"""Logging that stays readable through an outage: repeats collapse, then get counted.

A dead broker makes every client log the same refusal several times a second
(librdkafka, aiokafka, our loops' retries). `RepeatFilter` lets the first of
each kind through, drops repeats for `window` seconds, then says how many it
dropped. Messages are the same kind when they differ only in their numbers
("after 3ms", an offset, a port).
"""

from __future__ import annotations

import logging
import re
import threading
import time

_NUMBERS = re.compile(r"\d+")

# `extra=` for messages that must each be seen however alike (a supervisor's restarts).
ALWAYS = {"collapse": False}
_local = threading.local()


class RepeatFilter(logging.Filter):
    def __init__(self, window: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple, list] = {}  # kind -> [window start, suppressed, logger name, level, text]
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if (getattr(_local, "reporting", False) or record.levelno < logging.WARNING
                or not getattr(record, "collapse", True)):
            return True  # our own summaries, and routine messages, always pass
        try:
            text = record.getMessage()
        except Exception:
            return True
        kind = (record.name, record.levelno, _NUMBERS.sub("#", text))
        now = time.monotonic()
        expired = self._expire(now)
        with self._lock:
            entry = self._seen.get(kind)
            if entry is None:
                self._seen[kind] = [now, 0, record.name, record.levelno, text]
            else:
                entry[1] += 1
                if self._flusher is None:  # the count is said even if the errors stop (the outage ended)
                    self._flusher = threading.Thread(target=self._flush, name="log-repeats", daemon=True)
                    self._flusher.start()
        self._report(expired, now)
        return entry is None

    def _expire(self, now: float) -> list:
        with self._lock:
            expired = [k for k, v in self._seen.items() if now - v[0] >= self.window]
            return [entry for entry in (self._seen.pop(k) for k in expired) if entry[1]]

    def _flush(self) -> None:
        while True:
            time.sleep(self.window / 2)
            now = time.monotonic()
            self._report(self._expire(now), now)
            with self._lock:
                if not any(v[1] for v in self._seen.values()):
                    self._flusher = None
                    return

    def _report(self, entries: list, now: float) -> None:
        _local.reporting = True
        try:
            for start, suppressed, name, level, text in entries:
                logging.getLogger(name).log(level, "... %d more like this in the last %.0f s: %s",
                                            suppressed, now - start, _shorten(text))
        finally:
            _local.reporting = False


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def console_handler(window: float = 30.0) -> logging.Handler:
    """The CLI's stderr handler, repeats collapsed within `window` seconds (0: none collapsed)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if window:
        handler.addFilter(RepeatFilter(window))  # an outage must not write megabytes of the same error
    return handler


def dict_config(level: str, window: float = 30.0) -> dict:
    """A logging.config.dictConfig for frameworks that configure logging themselves (Faust's worker)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"repeats": {"()": RepeatFilter, "window": window}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["repeats"],
                                 "stream": "ext://sys.stdout"}},
        "root": {"level": level, "handlers": ["default"]},
    }


def librdkafka_logger() -> logging.Logger:
    """A confluent-kafka client's `logger`: librdkafka's own log then goes through logging (and the filter)."""
    return logging.getLogger("librdkafka")
