"""kopf storages that write nowhere: the operator must leave no trace on what it watches.

Its pod handler is an `on.event` handler, which stores nothing; these make sure that no other
path of kopf (progress, diff-base, touch) can write an annotation either.
"""

from __future__ import annotations

import copy
from typing import Any

import kopf


class NowhereProgressStorage(kopf.ProgressStorage):
    def fetch(self, *, key: Any, body: Any) -> None:
        return None

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        return None

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:
        return None

    def touch(self, *, body: Any, patch: Any, value: str | None) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        return copy.deepcopy(essence)


class NowhereDiffBaseStorage(kopf.DiffBaseStorage):
    def fetch(self, *, body: Any) -> None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None
