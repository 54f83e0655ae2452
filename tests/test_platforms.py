"""requirements.txt installs on every supported platform and Python (issue 19): offline checks of
its pins and markers, and of the logic of scripts/check_platforms.py (which asks the registry;
run it with `make platforms`). No test touches the network."""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_platforms",
                                               ROOT / "scripts" / "check_platforms.py")
check = importlib.util.module_from_spec(_spec)
sys.modules["check_platforms"] = check  # dataclasses resolve their module by name
_spec.loader.exec_module(check)

REQUIREMENTS = check.read_requirements(ROOT / "requirements.txt")
TARGETS = check.all_targets()
CUDA = re.compile(r"^(nvidia-|cuda-|triton$)")
#: what the book and the tests import: pinned on every target
CORE = ["torch", "torchvision", "open-clip-torch", "safetensors", "numpy", "pillow", "pandas",
        "matplotlib", "scipy", "tqdm", "jupyter-book", "papermill", "ipykernel",
        "ipywidgets", "pytest", "transformers", "ruff", "captum", "setuptools", "wheel"]


def env(target) -> dict[str, str]:
    """The marker environment of a target."""
    return check.marker_environment(target.platform, target.python)


def is_cuda(requirement: Requirement) -> bool:
    """A CUDA wheel torch pulls in on Linux (none exists for macOS or Windows)."""
    return bool(CUDA.match(canonicalize_name(requirement.name)))


def test_targets_are_the_supported_platforms_and_pythons():
    names = {t.name for t in TARGETS}
    assert len(names) == 12
    for plat in ("linux-x86_64", "linux-aarch64", "macos-arm64", "windows-x86_64"):
        for py in ("3.10", "3.11", "3.12"):
            assert f"{plat}/py{py}" in names


def test_every_requirement_is_an_exact_pin():
    assert len(REQUIREMENTS) > 150
    loose = [str(r) for r in REQUIREMENTS if check.pinned_version(r) is None]
    assert not loose, f"not pinned with ==: {loose}"


def test_cuda_packages_are_marked_linux_only():
    cuda = [r for r in REQUIREMENTS if is_cuda(r)]
    assert len(cuda) >= 19  # 15 nvidia-*, 3 cuda-*, triton (and 3.10's second cuda-* pins)
    for requirement in cuda:
        assert requirement.marker is not None, f"{requirement} has no marker"
        for target in TARGETS:
            holds = requirement.marker.evaluate(env(target))
            if target.platform.sys_platform in ("darwin", "win32"):
                assert not holds, f"{requirement} applies on {target.name}"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_each_target_gets_one_pin_per_package(target):
    pins = check.pins_for(REQUIREMENTS, env(target))  # raises on two pins for one package
    missing = [name for name in CORE if name not in pins]
    assert not missing, f"{target.name} lacks {missing}"
    cuda = sorted(name for name in pins if CUDA.match(name))
    if target.platform.sys_platform == "linux":
        # what torch 2.14.1 requires on Linux (platform_system == "Linux"), pinned there
        for name in ("triton", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "cuda-toolkit",
                     "cuda-bindings"):
            assert name in pins, f"{target.name} lacks {name}"
    else:
        assert not cuda, f"{target.name} would install {cuda}"
    windows_only = {"colorama"}
    macos_only = {"appnope"}
    assert bool(windows_only & set(pins)) == (target.platform.sys_platform == "win32")
    assert bool(macos_only & set(pins)) == (target.platform.sys_platform == "darwin")


def test_packages_pinned_twice_cover_every_python():
    """A package split by Python version has a pin on every target of its platforms."""
    by_name: dict[str, list[Requirement]] = {}
    for requirement in REQUIREMENTS:
        by_name.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    split = {name: reqs for name, reqs in by_name.items() if len(reqs) > 1}
    assert {"numpy", "pandas", "soupsieve", "cuda-bindings"} <= set(split)
    for name, requirements in split.items():
        for target in TARGETS:
            if CUDA.match(name) and target.platform.sys_platform != "linux":
                continue
            holding = [r for r in requirements if check.applies(r, env(target))]
            assert len(holding) == 1, f"{name} on {target.name}: {holding}"


def test_python_patch_floor_gets_a_pin():
    """soupsieve 4.x needs Python >= 3.11.5: 3.11.0 to 3.11.4 get the older pin."""
    early = {**env(check.Target(check.PLATFORMS[0], "3.11")), "python_full_version": "3.11.4"}
    late = {**early, "python_full_version": "3.11.5"}
    assert str(check.pins_for(REQUIREMENTS, early)["soupsieve"].specifier) == "==2.10"
    assert str(check.pins_for(REQUIREMENTS, late)["soupsieve"].specifier) == "==4.1.3"


def test_marker_environment_matches_this_interpreter():
    """The script's idea of a target is this machine's, where this machine is a target."""
    here = default_environment()
    found = [t for t in TARGETS
             if t.platform.sys_platform == here["sys_platform"]
             and t.platform.platform_machine == here["platform_machine"]
             and t.python == here["python_version"]]
    if not found or platform.python_implementation() != "CPython":
        pytest.skip("this interpreter is not one of the targets")
    ours = env(found[0])
    for key in ("sys_platform", "platform_system", "platform_machine", "os_name",
                "implementation_name", "platform_python_implementation", "python_version"):
        assert ours[key] == here[key], key


def test_this_environment_has_the_pins():
    """Where `make setup` installed requirements.txt, each pin for this interpreter is installed."""
    pins = check.pins_for(REQUIREMENTS, default_environment())
    try:
        metadata.version("torch")
    except metadata.PackageNotFoundError:
        pytest.skip("not the project's environment")
    wrong = {}
    for name, pin in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or not pin.specifier.contains(installed, prereleases=True):
            wrong[name] = (str(pin.specifier), installed)
    assert not wrong, f"pinned vs installed: {wrong}"


# --- the logic of scripts/check_platforms.py, on made-up metadata


def _meta(name, version, *requires, python=None):
    return {"name": name, "version": version, "requires_dist": list(requires),
            "requires_python": python}


def _pins(*lines):
    return {canonicalize_name(Requirement(x).name): Requirement(x) for x in lines}


WINDOWS = check.marker_environment(check.PLATFORMS[3], "3.11")
LINUX = check.marker_environment(check.PLATFORMS[0], "3.11")


def test_closure_finds_a_dependency_only_the_target_needs():
    metadata_ = {"tqdm": _meta("tqdm", "4.70.1", 'colorama; platform_system == "Windows"')}
    pins = _pins("tqdm==4.70.1")
    assert check.closure_problems(metadata_, pins, LINUX) == []
    assert check.closure_problems(metadata_, pins, WINDOWS) == [
        "tqdm needs colorama, which is not pinned here"]


def test_closure_checks_versions_extras_and_python():
    metadata_ = {
        "a": _meta("a", "1.0", "b[fast]>=2", 'c; extra == "never"'),
        "b": _meta("b", "1.5", 'd; extra == "fast"'),
        "d": _meta("d", "1.0", python=">=3.12"),
    }
    problems = check.closure_problems(metadata_, _pins("a==1.0", "b==1.5", "d==1.0"), LINUX)
    assert problems == ["a needs b>=2, pinned 1.5", "d 1.0 requires Python >=3.12"]
    metadata_["b"] = _meta("b", "2.0", 'd; extra == "fast"')
    metadata_["d"] = _meta("d", "1.0")
    problems = check.closure_problems(metadata_, _pins("a==1.0", "b==2.0"), LINUX)
    assert problems == ["b needs d, which is not pinned here"]  # reached through b[fast]


def test_pins_for_refuses_loose_and_duplicate_pins():
    with pytest.raises(ValueError, match="not pinned"):
        check.pins_for([Requirement("numpy>=2")], LINUX)
    twice = [Requirement('numpy==2.4.6; python_version >= "3.10"'),
             Requirement('numpy==2.2.6; python_version < "3.12"')]
    with pytest.raises(ValueError, match="two pins"):
        check.pins_for(twice, LINUX)
    assert check.pinned_version(Requirement("numpy==2.*")) is None


def test_read_requirements_refuses_pip_options(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nnumpy==2.4.6  # trailing\n\n")
    assert [str(r) for r in check.read_requirements(path)] == ["numpy==2.4.6"]
    path.write_text("-r other.txt\n")
    with pytest.raises(ValueError, match="pip options"):
        check.read_requirements(path)


def test_pip_reason_names_requires_python():
    stderr = ("ERROR: Ignored the following versions that require a different python version: "
              "2.4.5 Requires-Python >=3.11; 2.4.6 Requires-Python >=3.11\n"
              "ERROR: No matching distribution found for numpy==2.4.6\n")
    assert check._pip_reason(stderr, "numpy==2.4.6") == "numpy==2.4.6: Requires-Python >=3.11"
    assert "no wheel" in check._pip_reason("", "triton==3.8.0")


def test_linux_tags_reach_back_to_older_manylinux():
    """pip takes a manylinux_2_X --platform literally, so the script lists the older ones."""
    tags = check.manylinux_tags("x86_64", 28, 5)
    assert tags[0] == "manylinux_2_28_x86_64"
    for tag in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64",
                "manylinux1_x86_64"):
        assert tag in tags
    assert tags.index("manylinux_2_27_x86_64") < tags.index("manylinux2014_x86_64")
    assert check.manylinux_tags("aarch64", 28, 17)[-1] == "manylinux2014_aarch64"
