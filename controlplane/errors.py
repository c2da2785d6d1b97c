"""The control plane's one error base: everything `controlplane` raises for a part that did
not build, start or stop is a `ControlPlaneError`, whose message says which part and where
its log is. `python -m controlplane` and `make demo` print it in one line."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """A part of the local cluster (a build, a process, the node, an image, the network)
    failed; the message names it and its log."""
