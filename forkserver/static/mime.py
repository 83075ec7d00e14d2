"""Media types: file name → Content-Type value.

Owns the built-in extension table, the charset rule and how ``mime_types`` overrides
merge into it. Pure data and string work: must not touch files, sockets or requests.

A table of our own rather than ``mimetypes``, whose answers depend on the host's
/etc/mime.types: every machine must agree on what a file is.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CONTENT_TYPES", "DEFAULT_TYPE", "ContentTypes", "content_type", "with_charset"]

DEFAULT_TYPE = "application/octet-stream"

# Media types by lower-cased extension.
_TYPES: dict[str, str] = {
    # documents and code
    "html": "text/html",
    "htm": "text/html",
    "xhtml": "application/xhtml+xml",
    "css": "text/css",
    "js": "text/javascript",  # RFC 9239
    "mjs": "text/javascript",
    "json": "application/json",
    "map": "application/json",  # source maps
    "jsonld": "application/ld+json",
    "webmanifest": "application/manifest+json",
    "xml": "application/xml",
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "ics": "text/calendar",
    "vtt": "text/vtt",
    "yaml": "application/yaml",  # RFC 9512
    "yml": "application/yaml",
    "toml": "application/toml",
    "pdf": "application/pdf",
    "wasm": "application/wasm",
    # images
    "svg": "image/svg+xml",
    "png": "image/png",
    "apng": "image/apng",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "ico": "image/x-icon",
    "bmp": "image/bmp",
    # fonts
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    # audio and video
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "webm": "video/webm",
    "ogv": "video/ogg",
    "mov": "video/quicktime",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    # archives: served as themselves, never with Content-Encoding
    "zip": "application/zip",
    "gz": "application/gzip",
    "tgz": "application/gzip",
    "br": "application/x-brotli",  # a .br asked for by name is not a coding of itself
    "tar": "application/x-tar",
    "bz2": "application/x-bzip2",
    "xz": "application/x-xz",
    "zst": "application/zstd",
    "7z": "application/x-7z-compressed",
    "epub": "application/epub+zip",
}

# Textual types that are not text/*: they get a charset parameter too.
_TEXTUAL = frozenset({
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/yaml",
    "application/toml",
    "application/javascript",
    "image/svg+xml",
})


def with_charset(media_type: str) -> str:
    """``text/css`` → ``text/css; charset=utf-8``; a value with parameters is kept."""
    if ";" in media_type:
        return media_type  # the operator wrote the parameters they want
    if media_type.startswith("text/") or media_type in _TEXTUAL:
        return f"{media_type}; charset=utf-8"
    return media_type


# Extension → full Content-Type value, charset included, computed once at import.
CONTENT_TYPES: dict[str, str] = {ext: with_charset(kind) for ext, kind in _TYPES.items()}


def _lookup(table: dict[str, str], name: str) -> str:
    dot = name.rfind(".")
    if dot < 0:
        return DEFAULT_TYPE
    return table.get(name[dot + 1 :].lower(), DEFAULT_TYPE)


def content_type(name: str) -> str:
    """The built-in Content-Type for a file name (its last extension, case-insensitive)."""
    return _lookup(CONTENT_TYPES, name)


class ContentTypes:
    """The built-in table with a site's ``mime_types`` overrides on top."""

    __slots__ = ("table",)

    def __init__(self, overrides: Iterable[tuple[str, str]] = ()) -> None:
        self.table = dict(CONTENT_TYPES)
        for extension, media_type in overrides:
            self.table[extension.lower()] = with_charset(media_type)

    def __call__(self, name: str) -> str:
        return _lookup(self.table, name)
