"""The one harness for candidate processes: each kind's command line, client-go's timing from
the Lease duration by client-go's own ratios unless given, and bad kinds refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from controlplane import candidates
from controlplane.candidates import CandidateProcess

KC = Path("/tmp/kubeconfig")


@pytest.fixture(autouse=True)
def no_go_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(candidates.build, "ensure",
                        lambda names: {n: Path(f"/bin/{n}") for n in names})


def test_this_librarys_candidate_on_either_client() -> None:
    assert CandidateProcess("pykube", KC, "web", "p0", 4, "apps", events=True).command() == [
        sys.executable, "-m", "examples.candidate", f"--kubeconfig={KC}", "--namespace=apps",
        "--lease=web", "--id=p0", "--ttl=4", "--store=pykube", "--events"]


def test_client_go_takes_client_gos_ratios_unless_told() -> None:
    default = CandidateProcess("client-go", KC, "web", "g", 15).command()
    assert default[0] == "/bin/leaderpeer"
    assert default[-3:] == ["-lease-duration=15s", "-renew-deadline=10000ms",
                            "-retry-period=2000ms"]
    told = CandidateProcess("client-go", KC, "web", "g", 4, renew_deadline=1.333,
                            retry_period=0.666)
    assert told.command()[-2:] == ["-renew-deadline=1333ms", "-retry-period=666ms"]


def test_the_sidecar_and_the_official_elector() -> None:
    sidecar = CandidateProcess("sidecar", KC, "web", "s0", 4, "apps", port=4040).command()
    assert sidecar[1:4] == ["-m", "leadership_operator.cli", "sidecar"]
    assert {"--election=web", "--namespace=apps", "--identity=s0", "--port=4040",
            "--lease-seconds=4"} <= set(sidecar)
    official = CandidateProcess("kubernetes-leaderelection", KC, "web", "o", 4).command()
    assert official[1:3] == ["-m", "benchmarks.official_candidate"]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        CandidateProcess("etcd", KC, "web", "x", 4)
    with pytest.raises(ValueError, match="port"):
        CandidateProcess("sidecar", KC, "web", "x", 4)
