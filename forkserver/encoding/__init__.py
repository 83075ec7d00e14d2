"""Representations of a file by content coding, and the validators that tell them apart.

SPEC §10: ``.br``/``.zst``/``.gz`` variants chosen by Accept-Encoding
(``negotiation``), gzip made on the fly and kept once per file version
(``gzipcache``), ``.gz``-only files decoded for clients without gzip (``gunzip``),
ETags from the file's bytes (``etags``), and the per-worker hub that runs the slow
parts off the event loop (``prepare``). Settings and their checks: ``settings``.

Core layer: pure computation over descriptors and header values. Must not touch
sockets, signals or the event loop; the pool that runs jobs is handed in.
"""

from forkserver.encoding.etags import ContentTags, coded_tag, hash_bytes, hash_file
from forkserver.encoding.gunzip import Decoded, GunzipError, GunzipStream, measure
from forkserver.encoding.gzipcache import (
    CompressedBody,
    FileIdentity,
    GzipCache,
    compress_bytes,
    compress_file,
    file_identity,
)
from forkserver.encoding.negotiation import (
    BR,
    GZIP,
    IDENTITY,
    PREFERENCE,
    ZSTD,
    coding_weights,
    select_coding,
)
from forkserver.encoding.prepare import Busy, Failed, Preparations, Submit, Waiting
from forkserver.encoding.settings import CompressSettings, SettingProblem, TypeList

__all__ = [
    "BR",
    "GZIP",
    "IDENTITY",
    "PREFERENCE",
    "ZSTD",
    "Busy",
    "CompressSettings",
    "CompressedBody",
    "ContentTags",
    "Decoded",
    "Failed",
    "FileIdentity",
    "GunzipError",
    "GunzipStream",
    "GzipCache",
    "Preparations",
    "SettingProblem",
    "Submit",
    "TypeList",
    "Waiting",
    "coded_tag",
    "coding_weights",
    "compress_bytes",
    "compress_file",
    "file_identity",
    "hash_bytes",
    "hash_file",
    "measure",
    "select_coding",
]
