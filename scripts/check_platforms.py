#!/usr/bin/env python
"""Check that ``requirements.txt`` resolves on every platform and Python version readers use.

    python scripts/check_platforms.py [--requirements FILE] [--index-url URL] [--jobs N]
                                      [--only TARGET ...]

For each target (a platform × a Python version, :data:`PLATFORMS` × :data:`PYTHONS`) it asks
pip, against the registry (PyPI unless ``--index-url``), for a distribution of every pin that
applies there::

    pip install --isolated --dry-run --ignore-installed --no-deps --only-binary=:all: \\
        --platform TAG [--platform TAG ...] --python-version V --implementation cp \\
        --target TMP --report REPORT.json -r PINS

and prints one line per target: ``resolved`` or ``FAILED`` with pip's reason for each pin it
could not get (Requires-Python, or no wheel for the platform) or each dependency the set lacks.
It exits 1 if any target fails.

Why not simply ``pip install --dry-run --platform ... -r requirements.txt``: pip evaluates
environment markers (``sys_platform``, ``platform_system``, ``python_version``) against the
interpreter that runs it, not against ``--platform`` / ``--python-version``. Run on Linux it
would fetch the Linux-only CUDA wheels for macOS (and fail), and it would silently skip the
dependencies only Windows or macOS need (``colorama``, ``appnope``), so a set that leaves them
unpinned would "resolve". So this script evaluates every marker itself, with ``packaging`` and
the target's marker environment (:func:`marker_environment`):

1. the pins of ``requirements.txt`` whose markers hold on the target go to pip with
   ``--no-deps``: pip checks that each has a wheel for the platform tags and the Python version
   (and that its Requires-Python admits the version) and reports the wheel's metadata;
2. every dependency that metadata declares (``Requires-Dist``, markers evaluated for the
   target, extras followed) must be pinned for the target at a version that satisfies it
   (:func:`closure_problems`): the set is closed and consistent, so pip installs exactly these
   pins there.

``--isolated`` (and ``PIP_CONFIG_FILE`` set to the null device for pip's own subprocesses)
ignores this machine's pip configuration: its local wheel store (find-links, file indexes)
and its constraint file describe the machine, not what a reader's pip sees.

Pins that exist only as a source distribution would fail ``--only-binary=:all:``; none does
today. One that must be added goes into :data:`SDIST_ONLY` with the reason it builds anywhere
(pure Python), and pip may then use its sdist.

Where the registry serves no separate metadata files (PEP 658), pip downloads each wheel to
read its metadata: about 20 GB for the 12 targets, most of it the CUDA wheels of Linux (pip
deletes them as it goes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
DEFAULT_INDEX = "https://pypi.org/simple"

#: Python versions the book supports (pyproject.toml: requires-python >= 3.10).
PYTHONS: tuple[str, ...] = ("3.10", "3.11", "3.12")


@dataclass(frozen=True)
class Platform:
    """A reader's platform: the wheel platform tags pip may use there and its marker variables."""

    name: str
    #: pip's ``--platform`` values, best first (pip expands a macOS tag to older macOS versions
    #: itself, but takes a ``manylinux_2_X`` tag literally: :func:`manylinux_tags` lists them)
    tags: tuple[str, ...]
    sys_platform: str
    platform_system: str
    platform_machine: str
    os_name: str


def manylinux_tags(arch: str, glibc_minor: int, oldest: int) -> tuple[str, ...]:
    """``manylinux_2_{glibc_minor}_{arch}`` down to ``manylinux_2_{oldest}``, with the legacy
    aliases (``manylinux2014`` = 2.17, ``manylinux2010`` = 2.12, ``manylinux1`` = 2.5)."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags: list[str] = []
    for minor in range(glibc_minor, oldest - 1, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{arch}")
    return tuple(tags)


#: glibc 2.28 and macOS 14 are the floors of torch 2.14.1's own wheels (manylinux_2_28,
#: macosx_14_0_arm64); nothing else in the set needs more.
PLATFORMS: tuple[Platform, ...] = (
    Platform("linux-x86_64", manylinux_tags("x86_64", 28, 5),
             "linux", "Linux", "x86_64", "posix"),
    Platform("linux-aarch64", manylinux_tags("aarch64", 28, 17),
             "linux", "Linux", "aarch64", "posix"),
    Platform("macos-arm64", ("macosx_14_0_arm64",), "darwin", "Darwin", "arm64", "posix"),
    Platform("windows-x86_64", ("win_amd64",), "win32", "Windows", "AMD64", "nt"),
)

#: Pins published only as a source distribution, with the reason each is safe to build on any
#: platform (pure Python: the wheel it builds is ``py3-none-any``). pip may use their sdist
#: (``--no-binary``); every other pin must have a wheel for the target.
SDIST_ONLY: dict[str, str] = {}


@dataclass(frozen=True)
class Target:
    """One platform × Python version."""

    platform: Platform
    python: str

    @property
    def name(self) -> str:
        """``linux-x86_64/py3.11``."""
        return f"{self.platform.name}/py{self.python}"


@dataclass
class Result:
    """What the check found for one target."""

    target: Target
    problems: list[str] = field(default_factory=list)
    packages: int = 0
    sdists: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every pin has a distribution and the set is closed."""
        return not self.problems


def marker_environment(platform: Platform, python: str) -> dict[str, str]:
    """The PEP 508 marker variables of CPython ``python`` (``"3.11"``) on ``platform``."""
    full = f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": platform.os_name,
        "platform_machine": platform.platform_machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": platform.platform_system,
        "platform_version": "",
        "python_full_version": full,
        "python_version": python,
        "sys_platform": platform.sys_platform,
        "extra": "",
    }


def all_targets() -> list[Target]:
    """Every supported platform × Python version; Linux's first (the most to download)."""
    return [Target(p, v) for p in PLATFORMS for v in PYTHONS]


def read_requirements(path: Path = REQUIREMENTS) -> list[Requirement]:
    """The requirements of a pip requirements file (comments and blank lines dropped).

    Raises ``ValueError`` for pip options (``-r``, ``--index-url``, ...), which this project's
    file does not use and which would escape the checks here.
    """
    requirements = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(f"{path.name}:{number}: pip options are not supported: {line}")
        requirements.append(Requirement(line))
    return requirements


def pinned_version(requirement: Requirement) -> Version | None:
    """The version of an exact ``==`` pin (no wildcard), else None."""
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        return None
    return Version(specs[0].version)


def applies(requirement: Requirement, environment: dict[str, str]) -> bool:
    """Whether the requirement's marker (if any) holds in ``environment``."""
    return requirement.marker is None or requirement.marker.evaluate(environment)


def pins_for(requirements: list[Requirement],
             environment: dict[str, str]) -> dict[NormalizedName, Requirement]:
    """The requirements that apply in ``environment``, by normalised name.

    Raises ``ValueError`` if one is not an exact pin or two apply to the same package.
    """
    pins: dict[NormalizedName, Requirement] = {}
    for requirement in requirements:
        if not applies(requirement, environment):
            continue
        if pinned_version(requirement) is None:
            raise ValueError(f"not pinned with ==: {requirement}")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"two pins apply to {name}: {pins[name]} and {requirement}")
        pins[name] = requirement
    return pins


def closure_problems(metadata: dict[NormalizedName, dict], pins: dict[NormalizedName, Requirement],
                     environment: dict[str, str]) -> list[str]:
    """What the pinned set lacks on a target, from the metadata of its distributions.

    ``metadata`` maps each pinned package to the ``metadata`` pip's installation report gives
    (``requires_dist``, ``requires_python``). Every dependency whose marker holds in
    ``environment`` (extras requested anywhere in the set included) must be pinned at a version
    its specifier admits; each Requires-Python must admit the target's Python.
    """
    problems = []
    python = Version(environment["python_full_version"])
    for name, meta in sorted(metadata.items()):
        requires_python = meta.get("requires_python")
        if requires_python and not SpecifierSet(requires_python).contains(python, True):
            problems.append(f"{name} {meta['version']} requires Python {requires_python}")
    wanted: list[tuple[NormalizedName, frozenset[str]]] = [
        (name, frozenset(canonicalize_name(e) for e in pin.extras)) for name, pin in pins.items()]
    seen: set[tuple[NormalizedName, str]] = set()
    while wanted:
        name, extras = wanted.pop()
        meta = metadata.get(name)
        if meta is None:
            continue  # not pinned: reported where it is required
        for extra in sorted({""} | extras):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for line in meta.get("requires_dist") or []:
                dependency = Requirement(line)
                if dependency.marker is not None and not dependency.marker.evaluate(
                        {**environment, "extra": extra}):
                    continue
                problem = _unmet(name, dependency, pins)
                if problem:
                    problems.append(problem)
                    continue
                dep_name = canonicalize_name(dependency.name)
                wanted.append((dep_name, frozenset(canonicalize_name(e)
                                                   for e in dependency.extras)))
    return sorted(set(problems))


def _unmet(parent: str, dependency: Requirement,
           pins: dict[NormalizedName, Requirement]) -> str | None:
    """Why the pins do not meet ``parent``'s ``dependency``, or None."""
    pin = pins.get(canonicalize_name(dependency.name))
    needed = f"{dependency.name}{dependency.specifier}"
    if pin is None:
        return f"{parent} needs {needed}, which is not pinned here"
    version = pinned_version(pin)
    if version is None or not dependency.specifier.contains(version, True):
        return f"{parent} needs {needed}, pinned {version}"
    return None


def _pip_reason(stderr: str, requirement: str) -> str:
    """pip's reason for ``No matching distribution found for requirement``, in one line."""
    for line in stderr.splitlines():
        if "require a different python version" in line:
            version = requirement.split("==", 1)[1]
            found = re.search(rf"(?:^|[:;] ){re.escape(version)} Requires-Python ([^;]+)", line)
            if found:
                return f"{requirement}: Requires-Python {found.group(1).strip()}"
    return f"{requirement}: no wheel for this platform and Python"


def _pip_environment() -> dict[str, str]:
    """This process's environment without pip settings, and no pip configuration files."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    environment["PIP_CONFIG_FILE"] = os.devnull
    return environment


def _pip(target: Target, *options: str) -> subprocess.CompletedProcess:
    """Run pip isolated from this machine's configuration, for ``target``'s platform and Python.
    """
    command = [
        sys.executable, "-m", "pip", *options[:1], "--isolated", "--disable-pip-version-check",
        "--quiet", "--no-deps", "--only-binary=:all:",
        *(f"--platform={tag}" for tag in target.platform.tags),
        "--python-version", target.python, "--implementation", "cp", *options[1:],
    ]
    return subprocess.run(command, capture_output=True, text=True, env=_pip_environment(),
                          check=False)


def pip_report(target: Target, pins: dict[NormalizedName, Requirement], index_url: str,
               workdir: Path) -> tuple[dict, list[str]]:
    """Ask pip, against the registry, for a distribution of every pin on ``target``.

    Returns pip's installation report (``pip install --dry-run --report``) of the pins and, if
    some have no distribution there, an empty report and one-line reasons for those (each
    failing pin is dropped and pip asked again, to list them all).
    """
    pending = dict(pins)
    reasons: list[str] = []
    pins_file = workdir / "pins.txt"
    report_file = workdir / "report.json"
    while pending:
        pins_file.write_text("".join(f"{pin.name}{pin.specifier}\n"
                                     for pin in pending.values()))
        report_file.unlink(missing_ok=True)
        no_binary = [f"--no-binary={name}" for name in SDIST_ONLY if name in pending]
        run = _pip(target, "install", *no_binary, "--index-url", index_url, "--dry-run",
                   "--ignore-installed", "--target", str(workdir / "target"),
                   "--report", str(report_file), "-r", str(pins_file))
        if run.returncode == 0:
            report = json.loads(report_file.read_text())
            return (report, []) if not reasons else ({"install": []}, reasons)
        missing = re.findall(r"No matching distribution found for (\S+)", run.stderr)
        name = canonicalize_name(re.split(r"[=<>!~]", missing[-1])[0]) if missing else None
        if name not in pending:
            errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR:")]
            last = errors[-1] if errors else (run.stderr.strip().splitlines() or ["?"])[-1]
            return {"install": []}, [*reasons, f"pip failed: {last.removeprefix('ERROR: ')}"]
        reasons.append(_pip_reason(run.stderr, missing[-1]))
        del pending[name]
    return {"install": []}, reasons


def check_target(target: Target, requirements: list[Requirement], index_url: str) -> Result:
    """Resolve the pins for one target: pip finds the files, then the closure is checked."""
    start = time.monotonic()
    result = Result(target)
    environment = marker_environment(target.platform, target.python)
    try:
        pins = pins_for(requirements, environment)
    except ValueError as error:
        result.problems.append(str(error))
        return result
    with tempfile.TemporaryDirectory(prefix="check-platforms-") as tmp:
        report, reasons = pip_report(target, pins, index_url, Path(tmp))
    result.problems.extend(reasons)
    metadata = {canonicalize_name(item["metadata"]["name"]): item["metadata"]
                for item in report["install"]}
    result.packages = len(metadata)
    result.sdists = sorted(canonicalize_name(item["metadata"]["name"])
                           for item in report["install"]
                           if not item["download_info"]["url"].endswith(".whl"))
    if not reasons:
        result.problems.extend(closure_problems(metadata, pins, environment))
        result.problems.extend(f"{name}: pip chose a source distribution, not in SDIST_ONLY"
                               for name in result.sdists if name not in SDIST_ONLY)
    result.seconds = time.monotonic() - start
    return result


def describe(result: Result) -> str:
    """One line for a target."""
    head = f"{result.target.name:<22} "
    if result.ok:
        sdists = f", sdist: {', '.join(result.sdists)}" if result.sdists else ""
        return (f"{head}resolved  {result.packages} packages{sdists}"
                f"  ({result.seconds:.0f} s)")
    return f"{head}FAILED    {'; '.join(result.problems)}"


def main(argv: list[str] | None = None) -> int:
    """Check every target (or those named by ``--only``); exit status 1 if any fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument("--index-url", default=DEFAULT_INDEX)
    parser.add_argument("--jobs", type=int, default=4, help="targets checked at once")
    parser.add_argument("--only", nargs="+", metavar="TARGET",
                        help="targets to check, e.g. macos-arm64/py3.10 or macos-arm64")
    args = parser.parse_args(argv)

    requirements = read_requirements(args.requirements)
    targets = all_targets()
    if args.only:
        targets = [t for t in targets if t.name in args.only or t.platform.name in args.only]
        if not targets:
            parser.error(f"no target matches {args.only}")
    start = time.monotonic()

    def check_and_print(target: Target) -> Result:
        """Check one target and print its line at once."""
        result = check_target(target, requirements, args.index_url)
        print(describe(result), flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(check_and_print, targets))
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)}/{len(results)} targets resolved in "
          f"{time.monotonic() - start:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
