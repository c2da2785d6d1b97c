"""The `leadership` command: every flag of every subcommand documented, bad values exit 2
naming the flag."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from leadership_operator.cli import parser


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leadership_operator.cli", *args],
                          capture_output=True, text=True, timeout=60)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no subcommands")


def _flags(command: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in command._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_help_documents_every_flag(name: str) -> None:
    """Each flag the parser accepts, derived from the parser itself, appears in `--help` with
    a sentence of its own; a flag added without help text fails here."""
    flags = _flags(_subcommands()[name])
    assert flags, name
    done = run(name, "--help")
    assert done.returncode == 0
    for action in flags:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        for flag in action.option_strings:
            assert flag in done.stdout, flag


def test_the_help_test_sees_the_flags_a_list_once_missed() -> None:
    seen = {flag for a in _flags(_subcommands()["operator"]) for flag in a.option_strings}
    assert {"--bind-address", "--healthz-silence-seconds"} <= seen


@pytest.mark.parametrize("args, flag", [
    (["--namespace", "Bad_NS"], "--namespace"),
    (["--lease-name", "UPPER"], "--lease-name"),
    (["--label-prefix", "not a prefix"], "--label-prefix"),
    (["--resync-seconds", "0"], "--resync-seconds"),
    (["--resync-seconds", "soon"], "--resync-seconds"),
    (["--http-port", "70000"], "--http-port"),
    (["--kubeconfig", "/no/such/file"], "--kubeconfig"),
    (["--lease-seconds", "1"], "--lease-seconds"),
    (["--namespace", "a", "--all-namespaces"], "--all-namespaces"),
])
def test_bad_flags_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    done = run("operator", *args)
    assert done.returncode == 2 and flag in done.stderr, done.stderr


def test_defaults() -> None:
    args = parser().parse_args(["operator"])
    assert (args.namespaces, args.lease_name, args.label_prefix, args.resync_seconds,
            args.http_port, args.lease_seconds) == ([], "leadership-operator",
                                                    "leadership.dev", 60.0, 8080, 15)


@pytest.mark.parametrize("args, flag", [
    (["sidecar"], "--election"),
    (["sidecar", "--election", "Not_A_Lease"], "--election"),
    (["sidecar", "--election", "web", "--port", "0"], "--port"),
    (["sidecar", "--election", "web", "--lease-seconds", "1"], "--lease-seconds"),
    (["sidecar", "--election", "web", "--namespace", "-x"], "--namespace"),
    (["sidecar", "--election", "web", "--gate-port", "8081", "--gate-target", "::1"],
     "--gate-target"),
    (["sidecar", "--election", "web", "--gate-port", "8081", "--gate-target", "h:0"],
     "--gate-target"),
    (["sidecar", "--election", "web", "--gate-target", "8080"], "--gate-target"),
    (["status", "-o", "yaml"], "--output"),
    (["status", "--interval", "0"], "--interval"),
    (["status", "-n", "a", "-A"], "--all-namespaces"),
])
def test_bad_sidecar_and_status_flags_exit_2_naming_the_flag(args: list[str],
                                                             flag: str) -> None:
    done = run(*args)
    assert done.returncode == 2 and flag in done.stderr, done.stderr


def test_sidecar_and_status_defaults() -> None:
    args = parser().parse_args(["sidecar", "--election", "web"])
    assert (args.port, args.lease_seconds, args.namespace, args.identity) == (4040, 15, None,
                                                                               None)
    args = parser().parse_args(["status"])
    assert (args.namespaces, args.output, args.watch, args.all_leases) == ([], "table", False,
                                                                          False)
    gated = parser().parse_args(["sidecar", "--election", "web", "--gate-port", "8081",
                                 "--gate-target", "[::1]:9000"])
    assert (gated.gate_port, gated.gate_target) == (8081, ("::1", 9000))
    assert parser().parse_args(["sidecar", "--election", "web", "--gate-target",
                                "9000"]).gate_target == ("127.0.0.1", 9000)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_carry_iso_8601_utc_times(fmt: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    import json
    import logging
    import re

    from leadership_operator.cli import _logging

    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    try:
        _logging(fmt)
        logging.getLogger("leadership.test").info("hello")
    finally:
        root.handlers[:], _ = before
        root.setLevel(before[1])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    stamp = json.loads(line)["time"] if fmt == "json" else line.split()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), line
    if fmt == "json":
        assert {"time", "level", "name", "message"} <= set(json.loads(line))
