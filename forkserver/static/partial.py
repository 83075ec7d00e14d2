"""Range responses: the 206 of one part or a multipart/byteranges body (RFC 9110 §14).

Owns turning satisfiable parts of an open file into a 206 plan: Content-Range, the
multipart framing and one FileBody per part. Must not decide whether Range applies
(the site does: GET only, If-Range, never several ranges of a variant) nor parse it
(``ranges.py`` does).
"""

from __future__ import annotations

import os
import secrets

from forkserver.http.response import BodyStream, FileBody, Plan, SharedDescriptor, close_body
from forkserver.static.ranges import ByteRange, content_range, multipart_framing

__all__ = ["BOUNDARY_BYTES", "partial_plan"]

# Multipart boundary: 24 random hex digits cannot plausibly occur in a file (and a
# client cannot predict them to plant one).
BOUNDARY_BYTES = 12


def partial_plan(
    parts: list[ByteRange], headers: list[tuple[str, str]], fd: int, size: int,
    media_type: str, version: tuple[int, int],
) -> Plan:
    """206 for one or more satisfiable ``parts`` of the file open as ``fd``.

    Owns ``fd``: each body holds it (further parts take ``os.dup`` copies, so each
    owns its own descriptor), and it is closed here if the plan cannot be made.
    """
    try:
        if len(parts) == 1:
            part = parts[0]
            partial = _replace_fields(headers, {
                "Content-Length": str(part.length),
                "Content-Range": content_range(part, size),
            })
            body = FileBody(SharedDescriptor(fd), part.first, part.length, version)
            fd = -1  # the body holds it now
            return Plan(206, partial, file=body)
        boundary = secrets.token_hex(BOUNDARY_BYTES)
        heads, closing, total = multipart_framing(parts, size, media_type, boundary)
        multipart = _replace_fields(headers, {
            "Content-Type": f"multipart/byteranges; boundary={boundary}",
            "Content-Length": str(total),
        })
        rest: list[bytes | FileBody | BodyStream] = []
        try:
            for part_head, part in zip(heads[1:], parts[1:], strict=True):
                rest.append(part_head)
                rest.append(FileBody(
                    SharedDescriptor(os.dup(fd)), part.first, part.length, version
                ))
        except OSError:
            for segment in rest:
                if isinstance(segment, FileBody):
                    close_body(segment)
            raise
        rest.append(closing)
        first = FileBody(SharedDescriptor(fd), parts[0].first, parts[0].length, version)
        fd = -1  # the body holds it now
        return Plan(206, multipart, body=heads[0], file=first, rest=rest)
    finally:
        if fd >= 0:
            os.close(fd)


def _replace_fields(
    headers: list[tuple[str, str]], changes: dict[str, str]
) -> list[tuple[str, str]]:
    """``headers`` with the named fields' values replaced; new names are appended."""
    replaced = [(name, changes.pop(name, value)) for name, value in headers]
    replaced.extend(changes.items())
    return replaced
