"""Set-up files agree with each other: pins, the conda spec, CI and the README's two commands."""

import re
import tomllib
from pathlib import Path

import yaml

from retrieval_lib.infra.numerics import PINNED_ENV

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements):
    out = {}
    for req in requirements:
        name, _, version = req.partition("==")
        assert version, f"{req!r} is not pinned exactly"
        out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def _pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return _pins(reqs)


def test_torch_is_pinned_to_the_local_cpu_wheel():
    assert _pyproject_pins()["torch"] == "2.13.0"


def test_environment_yml_mirrors_the_pip_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python=3.11") for d in deps if isinstance(d, str))
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    conda_pins = _pins([p for p in pip if not p.startswith("-e")])
    assert conda_pins == _pyproject_pins()
    assert "-e ." in pip


def test_environment_yml_pins_the_same_numeric_code_paths():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert {k: str(v) for k, v in env["variables"].items()} == PINNED_ENV


def test_constraints_agree_with_pyproject():
    lines = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    constraints = _pins(lines)
    for name, version in _pyproject_pins().items():
        assert constraints.get(name) == version, name


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_quick_start_has_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", quick, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
    assert commands == ["make book", "make test"]


def test_make_lab_starts_as_root_and_on_the_tiny_world():
    import os
    import subprocess

    def dry_run(*args: str) -> str:
        out = subprocess.run(["make", "-n", "-o", ".venv/.installed", *args], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        return next(line for line in out.splitlines() if "jupyter lab" in line)

    line = dry_run("lab")
    assert "notebooks/" in line
    assert ("--allow-root" in line) == (os.getuid() == 0)  # JupyterLab refuses root without it
    assert "RETRIEVAL_LIB_PRESET" not in line
    assert dry_run("lab", "PRESET=tiny").startswith("RETRIEVAL_LIB_PRESET=tiny ")
