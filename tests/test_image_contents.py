"""The images run `server.py`: every project package it imports, directly or through another
one, must be copied into them, or the container dies at startup with an ImportError that no
test on this machine (where the whole checkout is importable) would ever see."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT_PACKAGES = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages `path` imports (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PROJECT_PACKAGES}
    return found


def packages_needed_by(entry: Path) -> set[str]:
    needed: set[str] = set()
    todo = project_imports(entry)
    while todo:
        package = todo.pop()
        needed.add(package)
        for module in (ROOT / package).rglob("*.py"):
            todo |= project_imports(module) - needed
    return needed


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_images_copy_every_package_server_py_imports(dockerfile: str) -> None:
    copied: set[str] = set()
    for line in (ROOT / dockerfile).read_text().splitlines():
        if line.startswith("COPY "):
            words = [w for w in shlex.split(line)[1:] if not w.startswith("--")]
            copied |= {w.rstrip("/").split("/")[0] for w in words[:-1]}
    needed = packages_needed_by(ROOT / "server.py")
    assert {"gateway", "planner"} <= needed  # the KV cache check after startup uses the planner
    assert needed <= copied, f"{dockerfile} does not copy {sorted(needed - copied)}: server.py imports them"


def test_cpu_image_installs_the_sampler_plugin_vllm_loads_by_entry_point() -> None:
    """cpu.yaml's engines run with fast_cpu_sampler on; vLLM loads the plugin only through the
    installed project's entry point, so copying cpu_sampler/ alone would silently leave it out."""
    text = (ROOT / "Dockerfile.cpu").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points."vllm.general_plugins"]' in pyproject and "cpu_sampler.plugin:register" in pyproject
    copies = [shlex.split(line)[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert any("pyproject.toml" in c for c in copies) and any("cpu_sampler/" in c for c in copies)
    installs = [line for line in text.splitlines() if line.startswith("RUN ") and "pip install --no-deps ." in line]
    assert installs, "Dockerfile.cpu copies cpu_sampler/ but does not pip-install the project (entry point)"
    last_copy = max(i for i, line in enumerate(text.splitlines()) if "cpu_sampler/" in line and line.startswith("COPY"))
    assert text.splitlines().index(installs[0]) > last_copy
