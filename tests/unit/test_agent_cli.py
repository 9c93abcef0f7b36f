"""`cfo-agent fetch`, the init container, run as a real process on file:// sources.

What `kubectl describe pod` shows of a failed init container is its last words: one line
that says why, and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.operation import Agent
from customer_friendly.contract.archive import Limits
from testbed.product_copy import copy_product
from testbed.puma_app import publish, release_archive
from tests.unit.test_archive import _python_without_filters

ROOT = Path(__file__).resolve().parents[2]


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def fetch(code: Path, release: str, artifacts: Path, python: str = sys.executable, cwd: Path = ROOT,
          **env: str) -> subprocess.CompletedProcess[str]:
    """`cfo-agent fetch`; an interpreter other than the venv's runs from a copy of the product (`cwd`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CFO_")}
    return subprocess.run([python, "-m", "customer_friendly.agent.cli", "fetch"], cwd=cwd, capture_output=True,
                          text=True,
                          timeout=60, env={**clean, "CFO_CODE_PATH": str(code), "CFO_RELEASE": release,
                                           "CFO_SOURCE": f"file://{artifacts}/{{release}}.tar.gz", **env})


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    publish(path, "v1", release_archive("v1"))
    chain = [symlink("x", "y/.."), symlink("y", "z/.."), symlink("z", "w/.."), symlink("w", ".")]
    publish(path, "chain", release_archive("chain", extra=chain))
    publish(path, "nul", release_archive("nul", extra=[symlink("lib", "app\x00" + "/.." * 40)]))
    marker = tarfile.TarInfo(".cfo-release.json")
    marker.size = 2
    publish(path, "marker", release_archive("marker", extra=[marker]))
    publish(path, "bad-sum", release_archive("bad-sum"), checksum="0" * 64)
    (path / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip")
    big = tarfile.TarInfo("public/big.bin")
    big.size = 300_000
    publish(path, "big", release_archive("big", extra=[big]))
    return path


@pytest.mark.parametrize(("release", "says"), [
    ("chain", "cfo-agent fetch: release chain refused: symlink 'x' -> 'y/..' points outside the release"),
    ("nul", "cfo-agent fetch: release nul refused: symlink 'lib' has a NUL byte in its target"),
    ("marker", "cfo-agent fetch: release marker refused: member '.cfo-release.json' collides with the agent's own"),
    ("bad-sum", "cfo-agent fetch: checksum mismatch for file://"),
    ("corrupt", "cfo-agent fetch: release corrupt refused: archive cannot be read"),
    ("missing", "cfo-agent fetch: file://"),
])
def test_a_refused_or_failed_fetch_says_why_in_one_line(tmp_path: Path, artifacts: Path, release: str,
                                                        says: str) -> None:
    code = tmp_path / "code"
    done = fetch(code, release, artifacts)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(says), done.stderr
    assert "Traceback" not in done.stderr
    assert not (code / "current").exists() and not list((code / "releases").iterdir())


def test_fetch_honours_the_archive_size_limit_the_sidecar_honours(tmp_path: Path, artifacts: Path) -> None:
    refused = fetch(tmp_path / "small", "big", artifacts, CFO_MAX_ARCHIVE_BYTES="100000")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "more than 100000 bytes (the size cap)" in refused.stderr
    assert fetch(tmp_path / "large", "big", artifacts, CFO_MAX_ARCHIVE_BYTES="1000000").returncode == 0


def test_one_setting_gives_the_same_limits_to_fetch_and_serve() -> None:
    config = AgentConfig.from_env(env={"CFO_MAX_ARCHIVE_BYTES": "12345"})
    assert config.limits == Limits(max_bytes=12345)
    assert Agent(config).limits == config.limits


def test_a_bad_setting_is_one_line_too(tmp_path: Path, artifacts: Path) -> None:
    done = fetch(tmp_path / "code", "v1", artifacts, CFO_MAX_ARCHIVE_BYTES="two gigs")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "bad setting" in done.stderr


def test_a_good_fetch_makes_the_release_current(tmp_path: Path, artifacts: Path) -> None:
    done = fetch(tmp_path / "code", "v1", artifacts)
    assert done.returncode == 0, done.stderr
    assert os.readlink(tmp_path / "code" / "current") == "releases/v1"


def test_fetch_runs_on_a_python_311_without_tarfile_filters(tmp_path: Path, artifacts: Path) -> None:
    """The init container on Debian bookworm's Python 3.11.2, where `filter=` made it crash-loop."""
    python = _python_without_filters()
    if python is None:
        pytest.fail("no Python 3.11 without tarfile.data_filter here: make test installs Debian's python3 (3.11.2)")
    product = copy_product(tmp_path / "product")
    done = fetch(tmp_path / "code", "v1", artifacts, python=python, cwd=product)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "code" / "current" / "config.ru").read_text().startswith('RELEASE = "v1"')
    refused = fetch(tmp_path / "code", "chain", artifacts, python=python, cwd=product)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "points outside" in refused.stderr
