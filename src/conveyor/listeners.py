"""Callbacks told of one kind of change (a store down, the disk low, the engine back): those that
watch a part of the platform hold one `Listeners` per change they report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Listeners(Generic[T]):
    def __init__(self, what: str) -> None:
        self._what = what
        """Names the change in the log when a listener fails (`the disk gate`)."""
        self._listeners: list[Callable[[T], None]] = []

    def add(self, listener: Callable[[T], None]) -> None:
        self._listeners.append(listener)

    def tell(self, value: T) -> None:
        for listener in self._listeners:
            try:
                listener(value)
            except Exception:  # one listener's failure must not keep the others from hearing
                log.exception("a listener of %s failed", self._what)
