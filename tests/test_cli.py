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
