import pytest

from nibcore.cli import main


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
