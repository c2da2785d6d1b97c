"""The `leadership` command.

    leadership operator [--kubeconfig PATH] [--namespace NS ... | --all-namespaces] ...
    leadership sidecar --election NAME [--port 4040] ...
    leadership status [-n NS ... | -A] [-o table|json] [--watch]

Each subcommand imports what it needs when it runs, so ``leadership --help`` is instant and a
missing extra is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import leadership
from leadership import toolkit

from .contract import DEFAULT_PREFIX, Labels, valid_lease_name
from .errors import CommandError, forbidden, one_line

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: where manifests/operator runs the operator, and so where its own Lease is by default.
OPERATOR_NAMESPACE = "leadership-system"


def own_namespace(otherwise: str = "default") -> str:
    """POD_NAMESPACE, else the ServiceAccount's namespace file, else `otherwise`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SA_NAMESPACE.exists():
        return SA_NAMESPACE.read_text().strip()
    return otherwise


def _namespace(value: str) -> str:
    if not toolkit.is_dns_label(value):
        raise argparse.ArgumentTypeError(f"not a valid namespace name: {value!r}")
    return value


def _lease_name(value: str) -> str:
    if not valid_lease_name(value):
        raise argparse.ArgumentTypeError(f"not a valid Lease name: {value!r}")
    return value


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return number


#: the longest identity a holder can have and still name a pod: a pod name (253), "_", a
#: suffix (63); the operator calls a longer holder malformed.
MAX_IDENTITY = 253 + 1 + 63


def _identity(value: str) -> str:
    if not value.strip() or not value.isprintable() or len(value) > MAX_IDENTITY:
        raise argparse.ArgumentTypeError(
            f"must be printable, not blank, at most {MAX_IDENTITY} characters: {value!r}")
    return value


def _lease_seconds(value: str) -> int:
    if not value.isdigit() or not 2 <= int(value) <= 3600:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds, 2 to 3600: "
                                         f"{value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {value!r}")
    return int(value)


def _gate_target(value: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1) or ``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address)."""
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    elif ":" in value:
        host, port = value.rsplit(":", 1)
    else:
        host, port = "127.0.0.1", value
    if not host or (":" in host and not value.startswith("[")):
        raise argparse.ArgumentTypeError(
            f"not [HOST:]PORT (an IPv6 address in brackets: [::1]:8080): {value!r}")
    return host, _port(port)


def _prefix(value: str) -> str:
    try:
        Labels(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value!r}")
    return path


def _kubeconfig_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("--kubeconfig", type=_existing_file, default=None,
                         help="kubeconfig file (default: $KUBECONFIG, then in-cluster, then "
                         "~/.kube/config)")


def _scope_flags(command: argparse.ArgumentParser) -> None:
    scope = command.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", dest="namespaces", action="append",
                       type=_namespace, default=[], metavar="NS",
                       help="this namespace (repeatable); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="every namespace (the default)")


def _lease_seconds_flag(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--lease-seconds", type=_lease_seconds, default=15,
                         metavar="SECONDS", help=f"{what}, 2 to 3600 (default: 15)")


def _label_prefix_flag(command: argparse.ArgumentParser, keys: str) -> None:
    command.add_argument("--label-prefix", type=_prefix, default=DEFAULT_PREFIX,
                         help=f"prefix of the {keys} (default: {DEFAULT_PREFIX})")


def _log_format_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("--log-format", choices=["json", "text"], default="json",
                         help="structured JSON logs (default) or plain text")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadership", description="Leader election on Kubernetes "
                                "Leases: the operator that labels leader pods, a sidecar for "
                                "apps in any language, and a status view.")
    p.add_argument("--version", action="version", version=f"%(prog)s {leadership.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    op = sub.add_parser(
        "operator", help="label the leader pod of every election, decided from its Lease",
        description="Label every member pod of every election leader, stale or follower, "
        "decided from the election's Lease. Pods join an election with the label "
        "<prefix>/election: <lease name>; the Lease is in the pod's namespace.")
    _kubeconfig_flag(op)
    _scope_flags(op)
    op.add_argument("--lease-name", type=_lease_name, default="leadership-operator",
                    help="the operator's own Lease, for electing its active replica "
                    "(default: leadership-operator)")
    op.add_argument("--lease-namespace", type=_namespace, default=None,
                    help="namespace of its own Lease, which must exist (default: the "
                    "namespace it runs in, $POD_NAMESPACE or the ServiceAccount's; outside a "
                    f"pod {OPERATOR_NAMESPACE}, as in the manifests, so that an operator run "
                    "by hand and a deployed one elect one active replica between them)")
    op.add_argument("--identity", type=_identity, default=None,
                    help="this replica's identity (default: $POD_NAME, else "
                    "<hostname>_<uuid>)")
    _label_prefix_flag(op, "election, role and on-expiry keys")
    op.add_argument("--resync-seconds", type=_positive, default=60.0,
                    help="put hand-edited labels right at least this often (default: 60)")
    op.add_argument("--http-port", type=_port, default=8080,
                    help="port of /healthz and /metrics (default: 8080)")
    op.add_argument("--bind-address", default=None, metavar="ADDRESS",
                    help="address of /healthz and /metrics (default: every address, IPv4 "
                         "and IPv6)")
    _lease_seconds_flag(op, "duration of the operator's own Lease")
    op.add_argument("--healthz-silence-seconds", type=_positive, default=180.0,
                    help="/healthz fails once a Lease watch has heard nothing, not even a "
                    "bookmark (about one a minute), for this long (default: 180)")
    _log_format_flag(op)

    sc = sub.add_parser(
        "sidecar", help="run a Candidate for this pod and serve GET /leader, for apps in "
        "any language",
        description="Campaign for the Lease --election in this pod's namespace with the "
        "pod's name as identity, and serve GET /leader (JSON), /healthz and /metrics. "
        "SIGTERM releases the Lease. Readiness never depends on leadership.")
    sc.add_argument("--election", type=_lease_name, required=True, metavar="NAME",
                    help="the Lease to campaign for (the pods' election label value)")
    sc.add_argument("--namespace", type=_namespace, default=None,
                    help="namespace of the Lease (default: $POD_NAMESPACE, else the "
                    "ServiceAccount's, else default)")
    sc.add_argument("--identity", type=_identity, default=None,
                    help="this candidate's identity (default: $POD_NAME, else the hostname, "
                    "which is the pod name in a pod)")
    _kubeconfig_flag(sc)
    sc.add_argument("--port", type=_port, default=4040,
                    help="port of /leader, /healthz and /metrics (default: 4040)")
    sc.add_argument("--bind-address", default=None, metavar="ADDRESS",
                    help="address of /leader, /healthz and /metrics (default: every "
                         "address, IPv4 and IPv6)")
    sc.add_argument("--gate-port", type=_port, default=None, metavar="PORT",
                    help="serve the gate on this port: connections pass to --gate-target "
                    "only while this pod leads, and every open one is closed when it steps "
                    "down (default: no gate)")
    sc.add_argument("--gate-target", type=_gate_target, default=None,
                    metavar="[HOST:]PORT",
                    help="the app's address behind the gate (default: 127.0.0.1:8080)")
    _lease_seconds_flag(sc, "leaseDurationSeconds; the leader renews every third of it "
                        "and steps down when no renewal succeeded for two thirds")
    _log_format_flag(sc)

    st = sub.add_parser(
        "status", help="one row per election: holder, leader pod, renewal, disagreements",
        description="Show every election (a Lease named by some pod's election label): its "
        "holder, the pod labelled leader, seconds since the last renewal by this machine's "
        "clock, transitions, member count, and any disagreement between the Lease and the "
        "labels, marked with '!'.")
    _kubeconfig_flag(st)
    _scope_flags(st)
    st.add_argument("-o", "--output", choices=["table", "json"], default="table",
                    help="a table (default) or JSON for scripts")
    st.add_argument("-w", "--watch", action="store_true",
                    help="keep going: print again whenever an election changes")
    st.add_argument("--interval", type=_positive, default=1.0,
                    help="with --watch, seconds between looks (default: 1)")
    st.add_argument("--all-leases", action="store_true",
                    help="also list Leases that no pod names in an election label")
    _label_prefix_flag(st, "election and role labels")
    return p


def _logging(fmt: str) -> None:
    """Log lines to stderr: JSON objects (``time``, ``level``, ``name``, ``message``) or
    text, their times in ISO 8601 UTC with milliseconds (2026-12-01T08:10:48.502Z)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        formatter = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                  rename_fields={"asctime": "time", "levelname": "level"})
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per pod event


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run = {"sidecar": _sidecar, "status": _status, "operator": _operator}[args.command]
    try:
        return run(args)
    except CommandError as exc:
        print(f"leadership {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except leadership.PermissionDeniedError as exc:
        print(f"leadership {args.command}: {forbidden(exc, args.command)}", file=sys.stderr)
        return 1
    except leadership.LeadershipError as exc:
        print(f"leadership {args.command}: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def _operator_extra() -> Iterator[None]:
    """Around a subcommand's imports: without the operator's extra (kopf, aiohttp, the
    official client), an error that says what to install (exit 2)."""
    try:
        yield
    except ImportError as exc:
        raise CommandError(f"{exc}; install leadership[operator]", code=2) from exc


def _operator(args: argparse.Namespace) -> int:
    with _operator_extra():
        from . import app
    _logging(args.log_format)
    options = app.Options(
        kubeconfig=args.kubeconfig,
        namespaces=args.namespaces, lease_name=args.lease_name,
        lease_namespace=args.lease_namespace or own_namespace(OPERATOR_NAMESPACE),
        # A replica's pod name in a pod; elsewhere unique per process.
        identity=args.identity or (leadership.pod_identity() if os.environ.get("POD_NAME")
                                   else leadership.default_identity()),
        label_prefix=args.label_prefix, resync_seconds=args.resync_seconds,
        http_port=args.http_port, lease_seconds=args.lease_seconds,
        bind_address=args.bind_address,
        healthz_silence_seconds=args.healthz_silence_seconds)
    asyncio.run(app.run(options))
    return 0


def _sidecar(args: argparse.Namespace) -> int:
    with _operator_extra():
        from . import sidecar
    _logging(args.log_format)
    identity = args.identity or leadership.pod_identity()  # the operator matches it to the pod
    if args.gate_target is not None and args.gate_port is None:
        raise CommandError("--gate-target needs --gate-port (the gate's own port)", code=2)
    options = sidecar.SidecarOptions(
        election=args.election, namespace=args.namespace or own_namespace(),
        identity=identity, kubeconfig=args.kubeconfig, port=args.port,
        lease_seconds=args.lease_seconds, bind_address=args.bind_address,
        gate_port=args.gate_port, gate_target=args.gate_target or ("127.0.0.1", 8080))
    return int(asyncio.run(sidecar.run(options)))


def _status(args: argparse.Namespace) -> int:
    with _operator_extra():
        from . import status
    options = status.StatusOptions(
        kubeconfig=args.kubeconfig, namespaces=args.namespaces,
        labels=Labels(args.label_prefix), output=args.output, watch=args.watch,
        interval=args.interval, all_leases=args.all_leases)
    try:
        return int(asyncio.run(status.run(options)))
    except KeyboardInterrupt:  # the way out of --watch
        return 0


if __name__ == "__main__":
    sys.exit(main())
