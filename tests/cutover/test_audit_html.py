"""``replicator audit --html``: one self-contained page, opened in a real headless Chromium.

The page must load nothing (no script, stylesheet, font or image from anywhere), say its verdict in words
and in the banner's colour, and draw the two timelines. Chromium renders it to a PNG (decoded here with
the standard library) and dumps its DOM; without Chromium the browser test skips, saying how to install it.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from replicator.cutover import audit_html
from tests.support.migrated import Migration, copy_of, edit_certificate, run_cli

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it when online)",
)
WINDOW = (1000, 1900)


def report(m: Migration, out: Path) -> tuple[int, str]:
    done = run_cli("audit", "--certificate", str(m.certificate), "--chain", str(m.chain), "--html", str(out))
    return done.exit_code, out.read_text(encoding="utf-8")


def one_row_less(cert: dict[str, list[dict[str, int]]]) -> None:
    cert["tables"][0]["pg_rows"] -= 1


def test_the_page_is_self_contained_and_says_it_all(migration: Migration, tmp_path: Path) -> None:
    code, page = report(copy_of(migration, tmp_path / "files"), tmp_path / "report.html")
    assert code == 0
    assert not re.search(r"\b(src|href)\s*=|@import|url\(|<script|<link", page, re.IGNORECASE)
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * 2  # the SVG namespace only
    assert 'data-verdict="PASS"' in page
    for words in ("child", "pair", "parent", "snapshot", "cutover", "write outage", "figures reconcile"):
        assert words in page, words
    assert page.count("<svg") == 2


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit truecolour PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8, depth
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % channels < 3) for r in rows]


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _near(pixel: tuple[int, ...], colour: str, tolerance: int = 12) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, _hex(colour), strict=True))


def _pixels(rows: list[bytes], y: int) -> list[tuple[int, int, int]]:
    row = rows[y]
    return [(row[i], row[i + 1], row[i + 2]) for i in range(0, len(row), 3)]


@needs_chromium
@pytest.mark.parametrize("verdict", ["PASS", "FAIL"])
def test_the_page_in_a_real_browser(verdict: str, migration: Migration, tmp_path: Path) -> None:
    files = copy_of(migration, tmp_path / "files")
    if verdict == "FAIL":
        edit_certificate(files.certificate, one_row_less)
    code, _ = report(files, tmp_path / "report.html")
    assert code == (0 if verdict == "PASS" else 3)
    url = (tmp_path / "report.html").as_uri()
    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-verdict="{verdict}"' in dom.stdout
    assert f"<h1>{verdict}</h1>" in dom.stdout
    assert dom.stdout.count("<svg") == 2
    shot = tmp_path / f"{verdict}.png"
    done = _chromium(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
    assert done.returncode == 0, done.stderr[-2000:]
    width, height, rows = read_png(shot)
    assert (width, height) == WINDOW
    banner = audit_html.PASS_COLOUR if verdict == "PASS" else audit_html.FAIL_COLOUR
    band = _pixels(rows, 12)  # the banner's top edge, across the page
    assert sum(_near(p, banner) for p in band) > width // 2, band[width // 2]
    page = [p for y in range(220, height, 7) for p in _pixels(rows, y)]  # below the banner
    assert len(set(page)) > 40  # not blank: text, tables, two charts
    assert sum(_near(p, "#0969da") for p in page) > 200  # the blue batch bars and steps were drawn
    assert sum(_near(p, audit_html.OUTAGE_COLOUR) for p in page) > 50  # the cutover, the write outage
