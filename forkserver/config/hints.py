"""Unknown keys: the suggestion that turns a typo or another tool's word into a fix.

Owns "unknown key (did you mean …?)" and the nginx directives newcomers write.
Must not read files.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from forkserver.config.schema import SCHEMA, TOP_LEVEL_KEYS

# nginx directives a newcomer writes at the top level, and what forkserver calls them:
# "unknown key (nginx's WORD …)". Fuzzy matching would point these the wrong way
# (root → docroot would be right by luck; index → headers would not).
NGINX_WORDS = {
    "root": "is docroot: here",
    "server_name": "is names: of an entry of sites: here",
    "try_files": "is fallback: in a rule of rules: here",
    "auth_basic": "is auth: in a rule of rules: here",
    "return": "is redirect: in a rule of rules: here",
    "worker_processes": "is workers: here",
    "worker_connections": "has no equivalent: a worker takes connections up to its "
                          "open-file limit (ulimit -n, LimitNOFILE=)",
    "keepalive_timeout": "is keepalive: under timeouts: here",
    "client_header_timeout": "is header: under timeouts: here",
    "send_timeout": "is send: under timeouts: here",
    "index": "has no equivalent: a directory is served by its index.html",
    "gzip_static": "is precompressed: here",
    "gzip": "is gzip: under compress: here (gzip_static is precompressed:)",
    "pid": "is pidfile: here",
    "add_header": "is headers: here",
    "error_page": "is error_pages: here",
    "types": "is mime_types: here",
}
# A section's child written at the top level: "header" → "timeouts.header".
CHILD_KEYS = {key.partition(".")[2]: key for key in SCHEMA if "." in key}


def unknown_key(
    key: str, nested_in: str = "", empty_sections: Mapping[str, int] | None = None
) -> str:
    """"unknown key", plus the closest known key when one is close enough to be a typo.

    ``empty_sections`` maps each section the file left empty (``timeouts:`` alone) to
    its line: a child of it at the top level is then an indentation mistake.
    """
    if nested_in:
        candidates = [k for k in SCHEMA if k.startswith(nested_in + ".")]
        close = difflib.get_close_matches(key, candidates, n=1)
    elif key in SCHEMA:  # "timeouts.header: 5" written flat at the top level
        head, _, tail = key.partition(".")
        return f"unknown key (write it nested: '{tail}:' indented under '{head}:')"
    elif key.lower() in NGINX_WORDS:  # before children: nginx's "types" is not compress's
        return f"unknown key (nginx's {key.lower()} {NGINX_WORDS[key.lower()]})"
    elif key in CHILD_KEYS:  # before fuzzy matching, which finds "headers" for "header"
        section = CHILD_KEYS[key].partition(".")[0]
        line = (empty_sections or {}).get(section)
        if line is not None:
            return (
                f"unknown top-level key; it is a key of {section}: indent it under "
                f"{section}: (line {line})"
            )
        close = [CHILD_KEYS[key]]
    else:
        close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
        if not close:  # "keepalive: 5" at the top level belongs in a section
            leaves = {k.partition(".")[2]: k for k in SCHEMA if "." in k}
            # A stricter cutoff than difflib's 0.6: at 0.6 "bogus" would "mean" burst.
            nested = difflib.get_close_matches(
                key.rpartition(".")[2], list(leaves), n=1, cutoff=0.7
            )
            close = [leaves[nested[0]]] if nested else []
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
