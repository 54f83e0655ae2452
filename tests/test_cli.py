import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from nibcore.cli import main, method_params, parser


def test_cli_writes_an_overlay_and_prints_token_scores(tiny_registered, picture, tmp_path, capsys):
    _, checkpoint = tiny_registered
    image = tmp_path / "pair.png"
    picture.save(image)
    out = tmp_path / "overlay.png"
    assert main(["explain", str(image), "a red circle", "--model", "nib-tiny", "--pretrained",
                 str(checkpoint), "--steps", "3", "--out", str(out), "--device", "cpu"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "red" in printed and "completeness gap" in printed


def test_cli_errors_are_one_line_and_traceback_shows_them(tmp_path):
    folder = tmp_path / "photo.png"
    folder.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["explain", str(folder), "a red circle"])
    assert str(exit_.value.code) == f"error: image {folder} is a folder, not a file: give the " \
                                    f"path of the file itself"
    with pytest.raises(IsADirectoryError):
        main(["--traceback", "explain", str(folder), "a red circle"])


# --- method parameters reach the method or are refused ---------------------------------------

def test_a_parameter_the_method_lacks_is_refused_in_one_line(tmp_path):
    image = tmp_path / "missing.png"  # refused before the image or the model is read
    with pytest.raises(SystemExit) as exit_:
        main(["explain", str(image), "a red circle", "--method", "rise", "--layer", "3"])
    text = str(exit_.value.code)
    assert text.startswith("error: method 'rise' has no parameter layer (--layer); it takes [")
    assert "\n" not in text
    with pytest.raises(SystemExit, match=r"has no parameter bogus \(--param bogus=...\)"):
        main(["explain", str(image), "x", "--method", "nib", "--param", "bogus=1"])


def test_given_parameters_are_passed_to_any_method():
    args = parser().parse_args(["explain", "x.png", "t", "--method", "rise", "--param", "seed=3",
                                "--param", "n_masks=50"])
    assert method_params(args) == {"seed": 3, "n_masks": 50}
    args = parser().parse_args(["explain", "x.png", "t", "--num-steps", "4", "--schedule",
                                "paper"])
    assert method_params(args) == {"num_steps": 4, "schedule": "paper"}
    assert method_params(parser().parse_args(["explain", "x.png", "t"])) == {}


# --- every command the repository prints parses ----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"(python -m nibcore(?:\.store)?|(?<![\w./-])nib) "
                     r"((?:explain|evaluate|store|generate|timing|audit)\b[^\n`\\;]*)")
#: synopsis placeholders in usage lines -> a value of the right type
PLACEHOLDERS = {"IMAGE": "picture.png", "N": "10", "FILE": "rows.jsonl",
                "FILE.json": "report.json", "...": "", "…": "", "options": "", "NAME": "table2"}


def printed_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command line the repository prints: the README, the
    chapters (sources and outputs), the package's code and docstrings, the scripts, the Makefile
    and the store's sidecars."""
    sources = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "book").glob("*.ipynb")),
               *sorted((ROOT / "nibcore").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py")),
               *sorted((ROOT / "data" / "results").glob("*.json"))]
    found = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".ipynb", ".json"):
            text = json.dumps(json.loads(text), indent=0).replace("\\n", "\n").replace('\\"', '"')
        text = re.sub(r"\\\n\s*", " ", text)  # a command continued over lines
        for m in COMMAND.finditer(text):
            found.append((f"{path.relative_to(ROOT)}", f"{m.group(1)} {m.group(2)}"))
    return found


def to_argv(command: str) -> list[str] | None:
    """The argv ``main`` gets for a printed command; None for a template (``{name}``)."""
    if "{" in command:
        return None
    command = re.sub(r"\s#.*", "", command).split(" | ")[0]  # a trailing comment, a pipe
    command = re.sub(r"(\S+?)(\|[\w-]+)+", r"\1", command)  # choices a|b|c: the first
    command = re.sub(r"\[([^\[\]]*)\]", r"\1", command)  # optional parts, as if given
    try:
        words = shlex.split(command)
    except ValueError:  # the closing quote of the string the command was printed in
        words = shlex.split(command.rstrip().rstrip("\"'),.:"))
    # "..." is a value after an option ("--n ..."), a repetition elsewhere ("FILE ...")
    words = ["1" if w == "..." and i and words[i - 1].startswith("--") else PLACEHOLDERS.get(w, w)
             for i, w in enumerate(words)]
    words = [w for w in words if w]
    prog = 3 if words[:2] == ["python", "-m"] else 1
    argv = words[prog:]
    if words[prog - 1] == "nibcore.store":
        argv = ["store", *argv]
    return argv


def subcommands(p: argparse.ArgumentParser, argv: list[str]) -> bool:
    """Whether ``argv`` names a chain of subcommands (``["store", "generate"]``): prose that
    names a command without its arguments."""
    for word in argv:
        actions = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            return False
        p = actions[0].choices[word]
    return True


def test_every_printed_command_parses():
    commands = printed_commands()
    assert len(commands) >= 20, commands  # the finder finds them
    p = parser()
    checked = 0
    for where, command in commands:
        argv = to_argv(command)
        if argv is None:
            continue
        if subcommands(p, argv):
            checked += 1
            continue
        try:
            p.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: {command!r} does not parse as {argv}")
        checked += 1
    assert checked >= 20


def test_the_command_finder_catches_a_wrong_command():
    with pytest.raises(SystemExit):
        parser().parse_args(to_argv("python -m nibcore.store generate no-such-file"))
    assert subcommands(parser(), ["store", "generate"])
    assert not subcommands(parser(), ["store", "regenerate"])
    assert to_argv("python -m nibcore.store audit [FILE ...] [--pairs 2]") == [
        "store", "audit", "rows.jsonl", "--pairs", "2"]
