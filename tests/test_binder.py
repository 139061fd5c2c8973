"""binder/ as repo2docker reads it: the generated Dockerfile installs our requirements and runs postBuild."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def _repo2docker() -> str:
    exe = shutil.which("repo2docker") or str(Path(sys.executable).with_name("repo2docker"))
    if not Path(exe).exists():
        pytest.skip("repo2docker is not installed (pip install jupyter-repo2docker)")
    return exe


def test_repo2docker_reads_binder_folder():
    result = subprocess.run(
        [_repo2docker(), "--no-build", "--debug", "--no-run", str(ROOT)], capture_output=True, text=True, timeout=300
    )
    dockerfile = result.stdout + result.stderr
    assert result.returncode == 0, dockerfile[-3000:]
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert "./binder/postBuild" in dockerfile
    assert 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in dockerfile, "start runs before every session"
    assert re.search(r"python=3\.11", dockerfile), "runtime.txt's Python is used"


def test_binder_uses_cpu_torch_wheels():
    requirements = (BINDER / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in requirements
    assert re.search(r"^torch==", requirements, re.M)
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_postbuild_fails_fast_installs_the_package_and_prepares_the_demo():
    post = (BINDER / "postBuild").read_text().splitlines()
    body = [line for line in post if line.strip() and not line.startswith("#")]
    assert body[0] == "set -e", "postBuild must start with set -e so a failed step fails the build"
    assert any("pip install" in line and ".[demo" in line for line in body)
    assert any(line.startswith("saewidgets demo --quick") for line in body)
    assert (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild is executable"


def test_notebooks_the_badges_open_exist():
    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"(tutorials/[\w.-]+\.ipynb)", readme))
    assert "tutorials/01_quickstart.ipynb" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links notebooks that do not exist: {missing}"


def test_start_gives_binder_kernels_the_demos_allocator_setting():
    from saewidgets.models._memory import LARGE_BLOCK_ENV

    start = BINDER / "start"
    assert start.stat().st_mode & 0o111, "start is executable"
    lines = [line for line in start.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[-1] == 'exec "$@"', "start must hand over to the command repo2docker gives it"
    ((name, value),) = LARGE_BLOCK_ENV.items()
    assert f'export {name}="${{{name}:-{value}}}"' in lines
    result = subprocess.run(
        ["bash", str(start), "bash", "-c", f"echo ${name}"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == value, "the command start runs sees the setting"
