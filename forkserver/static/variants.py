"""Precompressed variants: the file itself or its fresh ``.br``/``.gz`` sibling.

Owns which representation of a file answers a request, by Accept-Encoding (RFC 9110
§12.5.3), among the variants the contained walk finds fresh beside the file actually
opened. Must not open anything outside the docroot (``docroot.py`` opens the
siblings) nor build a response.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from forkserver.http.negotiate import BR, GZIP, choose_encoding
from forkserver.static.docroot import Docroot, Opened

__all__ = ["VARIANT_SUFFIXES", "Representation", "representation"]

# Suffix of each precompressed variant, in order of preference at equal q.
VARIANT_SUFFIXES = {BR: ".br", GZIP: ".gz"}


@dataclass(slots=True)
class Representation:
    """The selected representation: the file itself or one precompressed variant."""

    fd: int
    st: os.stat_result
    encoding: str | None  # "br", "gzip" or None
    has_variants: bool  # the response varies by Accept-Encoding


def representation(
    docroot: Docroot, fields: Mapping[str, str], opened: Opened, st: os.stat_result
) -> Representation:
    """The file or a fresh precompressed variant, by Accept-Encoding (§12.5.3).

    Owns ``opened.fd``: it is in the result, or closed when a variant replaces it.
    """
    name = opened.names[-1]
    has_br = docroot.fresh_variant(opened, name + VARIANT_SUFFIXES[BR], st)
    has_gzip = docroot.fresh_variant(opened, name + VARIANT_SUFFIXES[GZIP], st)
    if not (has_br or has_gzip):
        return Representation(opened.fd, st, None, False)
    encoding = choose_encoding(fields.get("accept-encoding"), has_br, has_gzip)
    if encoding is not None:
        variant = docroot.open_variant(opened, name + VARIANT_SUFFIXES[encoding], st)
        if variant is not None:
            os.close(opened.fd)
            return Representation(variant[0], variant[1], encoding, True)
    return Representation(opened.fd, st, None, True)
