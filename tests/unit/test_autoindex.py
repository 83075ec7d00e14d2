"""autoindex.py: what a listing shows, in which order, and how names are escaped.

nginx-tests autoindex.t and autoindex_format.t are mirrored: links survive ``%``,
``?``, ``:``, quotes and UTF-8; ``<>&`` are escaped; the JSON carries name, type,
mtime and (for files only) size.
"""

from __future__ import annotations

import html.parser
import json
import os
from pathlib import Path
from urllib.parse import unquote

import pytest

from forkserver.static.autoindex import (
    Listing,
    ListingEntry,
    render_html,
    render_json,
    scan_directory,
)
from forkserver.static.conditional import http_date

NAMES = [
    "plain.txt",
    "sp ace.txt",
    "per%cent.txt",
    "ques?tion.txt",
    "ha#sh.txt",
    "dq\"uote.txt",
    "sq'uote.txt",
    "a:b.txt",  # not a scheme
    "été.txt",
    "日本語.txt",
    "<script>alert(1)",
    "x&y<z>.txt",
    "amp&amp;.txt",
    "back\\slash.txt",
]


class Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs)["href"]

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((self._href, data))
            self._href = None


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    for name in NAMES:
        (tmp_path / name).write_text("x" * len(name))
    (tmp_path / "zdir").mkdir()
    (tmp_path / "Adir").mkdir()
    (tmp_path / ".hidden").write_text("no")
    (tmp_path / ".git").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink("plain.txt", tmp_path / "good-link")
    os.symlink("/etc/passwd", tmp_path / "bad-link")
    os.symlink("nowhere", tmp_path / "dangling")
    os.utime(tmp_path / "plain.txt", (0, 784111777))
    return tmp_path


def scan(directory: Path, inside: set[str] | None = None) -> Listing:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        allowed = {"good-link", "dangling"} if inside is None else inside
        return scan_directory(fd, "/d/", lambda name: name in allowed)
    finally:
        os.close(fd)


def test_entries_are_sorted_directories_first_and_filtered(directory: Path) -> None:
    listing = scan(directory)
    names = [entry.name for entry in listing.entries]
    assert names[:2] == ["Adir", "zdir"]
    assert names[2:] == sorted([*NAMES, "good-link"])
    # Dotfiles, the FIFO, a symlink out of the docroot and a dangling one are left out.
    for hidden in (".hidden", ".git", "fifo", "bad-link", "dangling"):
        assert hidden not in names


def test_symlinks_show_their_target(directory: Path) -> None:
    entry = next(e for e in scan(directory).entries if e.name == "good-link")
    assert not entry.is_dir and entry.size == len("plain.txt")


def test_html_links_survive_every_character_and_names_are_escaped(directory: Path) -> None:
    page = render_html(scan(directory)).decode()
    parser = Links()
    parser.feed(page)
    links = dict(parser.links)
    assert links.pop("../") == "../"
    for name in NAMES:
        href = next(h for h, text in links.items() if text == name)
        assert unquote(href) == name  # the link leads back to exactly that name
        assert all(c.isalnum() or c in "-._~%" for c in href), href
    assert links["Adir/"] == "Adir/"
    assert "<script>" not in page and "<z>" not in page
    assert "&lt;script&gt;alert(1)" in page and "x&amp;y&lt;z&gt;.txt" in page
    assert "a%3Ab.txt" in page  # ":" encoded, so the link has no scheme


def test_html_title_is_escaped() -> None:
    page = render_html(Listing("/<b>&/", [])).decode()
    assert "<title>Index of /&lt;b&gt;&amp;/</title>" in page
    assert "../" in page
    assert 'href="../"' not in render_html(Listing("/", [])).decode()  # no parent of /


def test_json_mirrors_nginx_autoindex_format(directory: Path) -> None:
    items = json.loads(render_json(scan(directory)))
    by_name = {item["name"]: item for item in items}
    assert by_name["zdir"] == {
        "name": "zdir", "type": "directory", "mtime": by_name["zdir"]["mtime"]
    }
    assert by_name["plain.txt"] == {
        "name": "plain.txt", "type": "file", "mtime": http_date(784111777), "size": 9
    }
    assert by_name['dq"uote.txt']["size"] == len('dq"uote.txt')
    assert "日本語.txt" in by_name
    assert [item["name"] for item in items][:2] == ["Adir", "zdir"]


def test_names_that_are_not_utf8_are_left_out(tmp_path: Path) -> None:
    os.close(os.open(os.fsencode(tmp_path) + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY))
    (tmp_path / "good.txt").write_text("")
    listing = scan(tmp_path)
    assert [entry.name for entry in listing.entries] == ["good.txt"]
    render_json(listing)
    render_html(listing)


def test_an_empty_directory() -> None:
    assert json.loads(render_json(Listing("/e/", []))) == []
    assert b"Index of /e/" in render_html(Listing("/e/", [ListingEntry("x", False, 1, 0.0)]))
