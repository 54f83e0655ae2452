"""scripts/check_pages.py: a table that scrolls sideways or an image wider than its column at
1280 px fails; a page that fits passes. Needs the system chromium (skipped without it)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_pages", ROOT / "scripts" / "check_pages.py")
check_pages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_pages)

pytestmark = [
    pytest.mark.book,
    pytest.mark.skipif(check_pages.chromium() is None,
                       reason="chromium not installed (Debian package 'chromium'): "
                              "the page checker drives headless Chromium"),
]

CSS = "div.scroll { overflow-x: auto; max-width: 100%; } main { width: 600px; }"
CELL = "<td>" + "x" * 60 + "</td>"


def page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_text(f"<!DOCTYPE html><html><head><style>{CSS}</style></head>"
                    f"<body><main>{body}</main></body></html>", encoding="utf-8")
    return path


def test_overflowing_table_fails(tmp_path):
    wide = page(tmp_path, f'<div class="scroll"><table><tr>{CELL * 4}</tr></table></div>')
    result = check_pages.measure(wide)
    assert result["tables"] == 1
    assert len(result["problems"]) == 1 and "table 1" in result["problems"][0]
    assert check_pages.main([str(wide)]) == 1


def test_table_scrolling_inside_itself_fails(tmp_path):
    wide = page(tmp_path, '<table style="display:block; overflow-x:auto; max-width:100%">'
                          f"<tr>{CELL * 4}</tr></table>")
    result = check_pages.measure(wide)
    assert result["problems"] and "scrollWidth" in result["problems"][0]


def test_image_wider_than_column_fails(tmp_path):
    img = tmp_path / "wide.svg"
    img.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="900" height="50"/>')
    wide = page(tmp_path, '<div><img src="wide.svg" alt="wide figure"></div>')
    result = check_pages.measure(wide)
    assert result["images"] == 1
    assert result["problems"] and "wide figure" in result["problems"][0]


def test_fitting_page_passes(tmp_path):
    img = tmp_path / "small.svg"
    img.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="900" height="50"/>')
    fit = page(tmp_path, '<div class="scroll"><table><tr><td>a</td><td>1.0</td></tr></table>'
                         '</div><div><img src="small.svg" style="max-width:100%" alt="f"></div>')
    result = check_pages.measure(fit)
    assert (result["tables"], result["images"]) == (1, 1)
    assert result["problems"] == []
    assert check_pages.main([str(fit)]) == 0


def test_missing_page_is_an_error(tmp_path):
    assert check_pages.main([str(tmp_path / "absent.html")]) == 2
