"""The exceptions of the `leadership` package.

Stores translate their client library's errors into these, so the election logic can decide
what to retry without importing any client library:

- `TransientStoreError`: connection loss, timeouts, HTTP 5xx and 429. Retried with bounded,
  jittered backoff; leadership is lost only through the renew-deadline rule, never directly.
- `ConflictError` (HTTP 409): a compare-and-swap write lost the race, or a create found the
  Lease already there. The candidate re-reads and decides again.
- `NotFoundError` (HTTP 404 on a write): the Lease was deleted under us.
- `WatchExpiredError` (HTTP 410): a watch's resourceVersion is too old; re-list and re-watch.
- `FatalStoreError`: anything retrying cannot fix (401, 403, a missing namespace, an invalid
  object). It ends `Candidate.run_for_election()` with this exception.
- `PermissionDeniedError` (a `FatalStoreError`, HTTP 403): RBAC refused a verb on a resource;
  `verb` and `resource` say which, when the API server said so.
- `DuplicateIdentityError` (a `FatalStoreError`): another process renews the Lease under this
  candidate's identity. Identities must be unique per process.
"""

from __future__ import annotations

import re
from collections.abc import Collection


class LeadershipError(Exception):
    """Base class of every error this package raises on purpose."""


class StoreError(LeadershipError):
    """A Lease store request failed. `status` is the HTTP status code, when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientStoreError(StoreError):
    """Worth retrying: connection errors, timeouts, 5xx, 429."""


class ConflictError(StoreError):
    """HTTP 409: the write raced another writer (stale resourceVersion, or already exists)."""


class NotFoundError(StoreError):
    """HTTP 404 on a write: the Lease does not exist (any more)."""


class WatchExpiredError(StoreError):
    """HTTP 410 Gone: the watch's resourceVersion was compacted away; re-list."""


class FatalStoreError(StoreError):
    """Retrying cannot fix this: unauthorized, forbidden, missing namespace, invalid object."""


class PermissionDeniedError(FatalStoreError):
    """HTTP 403: RBAC does not grant `verb` on `resource` (both "" when the API server's
    message did not say)."""

    def __init__(self, message: str, *, status: int | None = 403, verb: str = "",
                 resource: str = "") -> None:
        super().__init__(message, status=status)
        self.verb, self.resource = verb, resource


class DuplicateIdentityError(FatalStoreError):
    """Another process writes the Lease under our identity: two processes share one identity.

    The candidate steps down and ends its campaign with this error; give each process its own
    identity (the default, ``<pod>_<uuid>``, is unique per process)."""


def describe_error(exc: BaseException) -> str:
    """An exception as a message or a log line may show it: its type and its text, never its
    ``repr`` (some client exceptions carry the request's headers, the bearer token among
    them, in theirs)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_DENIED = re.compile(r'cannot (\w+) resource "([^"]+)"(?: in API group "([^"]*)")?')
_VERBS = {"GET": "get", "PUT": "update", "POST": "create", "DELETE": "delete",
          "PATCH": "patch"}


def request_verb(method: str, watch: bool = False) -> str:
    """The RBAC verb of a request to the Leases API."""
    return "watch" if watch else _VERBS.get(method, method.lower())


def error_for_status(status: int, message: str, *,
                     authorized_verbs: Collection[str] = ()) -> StoreError:
    """Map an HTTP status from the API server to the matching `StoreError` subclass.

    401 and 403 are fatal (misconfigured credentials or RBAC), unless the store was granted
    the same verb before (`authorized_verbs`): an API server that has just restarted
    answers 403 until its authorizer has loaded the RBAC rules, and that heals. A verb never
    granted (a create-on-update after the Lease was deleted, say) stays fatal."""
    denied = _DENIED.search(message) if status == 403 else None
    if status in (401, 403) and authorized_verbs:
        if status == 401 or (denied is not None and denied.group(1) in authorized_verbs):
            return TransientStoreError(f"{message} (granted before: retried, as after an "
                                       "API server restart)", status=status)
    if status == 403:
        verb, resource, group = denied.groups() if denied is not None else ("", "", "")
        return PermissionDeniedError(message, verb=verb,
                                     resource=f"{resource}.{group}" if group else resource)
    if status == 409:
        return ConflictError(message, status=status)
    if status == 404:
        return NotFoundError(message, status=status)
    if status == 410:
        return WatchExpiredError(message, status=status)
    if status == 429 or status >= 500:
        return TransientStoreError(message, status=status)
    return FatalStoreError(message, status=status)
