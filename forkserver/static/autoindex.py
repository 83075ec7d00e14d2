"""Directory listings (``autoindex: true``): a directory's entries → HTML or JSON.

Owns which entries a listing shows, their order, and how names are escaped in HTML
and percent-encoded in links. Reads one directory through a descriptor the planner
opened; must not resolve paths, decide containment (the planner passes a check for
symlinks) or build responses.

Decisions (pinned by ``tests/unit/test_autoindex.py``):

* Entries whose name starts with ``.`` are left out, like every dotfile; so are FIFOs,
  sockets and devices (never served), names that are not valid UTF-8 (no URL can
  reach them), and symlinks whose target is outside the docroot, hidden, dangling or
  not a file or directory (listing them would reveal the outside).
* Directories first, then files; each group by name in code-point order (no locale,
  so every worker and machine agrees). Directories end with ``/``.
* Links are relative and fully percent-encoded (everything but unreserved
  characters, RFC 3986 §2.3), so spaces, ``%``, ``?``, ``#``, quotes, ``:`` and
  non-ASCII names all survive; displayed names are HTML-escaped.
* JSON mirrors nginx's ``autoindex_format json``: an array of
  ``{"name", "type": "directory"|"file", "mtime": HTTP-date, "size" (files only)}``.
"""

from __future__ import annotations

import html
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from forkserver.static.conditional import http_date

__all__ = ["Listing", "ListingEntry", "render_html", "render_json", "scan_directory"]


@dataclass(frozen=True, slots=True)
class ListingEntry:
    name: str
    is_dir: bool
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Listing:
    path: str  # the directory's decoded URL path, starting and ending with "/"
    entries: list[ListingEntry]


def _usable_name(name: str) -> bool:
    if name.startswith("."):
        return False
    try:
        name.encode("utf-8")  # surrogate escapes: bytes that are not UTF-8
    except UnicodeEncodeError:
        return False
    return True


def scan_directory(
    directory_fd: int, path: str, symlink_inside: Callable[[str], bool]
) -> Listing:
    """The entries of the directory open at ``directory_fd`` (not closed here).

    ``symlink_inside(name)`` says whether the symlink ``name`` may be followed: its
    target is inside the docroot and not hidden.
    """
    entries = []
    with os.scandir(directory_fd) as scan:
        for entry in scan:
            name = entry.name
            if not _usable_name(name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    if not symlink_inside(name):
                        continue
                    info = entry.stat(follow_symlinks=True)
            except OSError:
                continue  # vanished, or a dangling symlink
            mode = info.st_mode
            if stat.S_ISDIR(mode):
                entries.append(ListingEntry(name, True, 0, info.st_mtime))
            elif stat.S_ISREG(mode):
                entries.append(ListingEntry(name, False, info.st_size, info.st_mtime))
    entries.sort(key=lambda e: (not e.is_dir, e.name))
    return Listing(path, entries)


def _href(entry: ListingEntry) -> str:
    # safe="" encodes "/", ":", "?", "#", "%", quotes and every non-ASCII byte; a
    # relative link that starts with "a:" can then never be read as a URI scheme.
    return quote(entry.name, safe="") + ("/" if entry.is_dir else "")


def _iso_minute(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(max(seconds, 0)))


def render_html(listing: Listing) -> bytes:
    title = html.escape(f"Index of {listing.path}")
    rows = []
    if listing.path != "/":
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for entry in listing.entries:
        shown = html.escape(entry.name + ("/" if entry.is_dir else ""))
        size = "-" if entry.is_dir else str(entry.size)
        rows.append(
            f'<tr><td><a href="{html.escape(_href(entry))}">{shown}</a></td>'
            f'<td class="size">{size}</td>'
            f"<td><time>{_iso_minute(entry.mtime)}</time></td></tr>"
        )
    body = "\n".join(rows)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{title}</title>\n"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:0 1.5em 0 0}"
        ".size{text-align:right}</style></head>\n"
        f"<body>\n<h1>{title}</h1>\n<table>\n"
        "<thead><tr><th>Name</th><th>Size</th><th>Last modified (UTC)</th></tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>\n</body>\n</html>\n"
    ).encode()


def render_json(listing: Listing) -> bytes:
    items: list[dict[str, object]] = []
    for entry in listing.entries:
        item: dict[str, object] = {
            "name": entry.name,
            "type": "directory" if entry.is_dir else "file",
            "mtime": http_date(entry.mtime),
        }
        if not entry.is_dir:
            item["size"] = entry.size
        items.append(item)
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
