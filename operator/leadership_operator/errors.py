"""The operator package's errors, and how the `leadership` command words them.

- `CommandError`: a mistake the user can fix (no credentials, a port in use, a namespace that
  does not exist). The command prints its message, one line, and exits with `code`: never a
  traceback.
- `forbidden(exc)`: a `leadership.PermissionDeniedError` (HTTP 403) as one line that names
  the verb and resource RBAC refused, and the manifests that grant it.

Every other error of the library (`leadership.errors`) is printed by its type and text
(`leadership.describe_error`), bounded, never by ``repr``.
"""

from __future__ import annotations

import leadership

from . import text


class CommandError(Exception):
    """Told to the user in one line; the command exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


#: What each command needs, and where the project's manifests grant it.
GRANTED_BY = {
    "operator": "manifests/operator (kubectl apply -k manifests/operator, or its "
                "overlays/namespaced for one namespace)",
    "status": "a role with list on pods and on leases.coordination.k8s.io (the operator's "
              "ClusterRole in manifests/operator/cluster has them)",
    "sidecar": "the Role and RoleBinding of manifests/example/rbac.yaml (get, watch and "
               "update on its one Lease)",
}


def forbidden(exc: leadership.PermissionDeniedError, command: str) -> str:
    """A 403 as the command's one line: what is missing, and what grants it."""
    what = (f"{exc.verb} on {exc.resource}" if exc.verb and exc.resource
            else "a permission it needs")
    return text.cut(f"forbidden: RBAC does not grant {what}; the API server said: {exc}. "
                    f"Grant it with {GRANTED_BY.get(command, 'a Role or ClusterRole')}.",
                    2 * text.LINE, one_line=True)


def one_line(exc: BaseException) -> str:
    """Any other error as the command's one line."""
    return text.error(exc, text.LINE)
