"""Whether an open-file cache entry past its second still describes the file on disk.

Owns the check that renews an entry instead of rebuilding it: the request's names are
opened again through the docroot's contained walk (so containment, symlinks, dotfiles
and permissions are judged exactly as on the full path), and the file must be the same
inode with the same size, mtime and ctime, with no precompressed variant beside it.
Must not build answers, read the clock or change the cache: the site does that with
the verdict.

Why: an entry is trusted for CACHE_RECHECK_SECONDS (like nginx's
open_file_cache_valid). On a real site every popular file outlives its second many
times a minute, and rebuilding its answer (type, validators, Cache-Control, encoded
fields, a read) cost a site-mix request about 37k of its 199k instructions on average
(bench.misspath under callgrind). This check is three system calls (open, fstat,
close) and a few comparisons.

ctime is part of the identity because a write in place that keeps the size and puts
the mtime back (``touch -d``) changes nothing else a stat shows, while ctime cannot be
set from user space: every write, truncate, chmod or utime moves it.
"""

from __future__ import annotations

import os
import stat

from forkserver.static.docroot import Docroot, NoIndex, Refused
from forkserver.static.filecache import CachedFile
from forkserver.static.variants import VARIANT_SUFFIXES

__all__ = ["identity", "still_current"]


def identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must not change for a cached answer to stay the file's answer."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def still_current(docroot: Docroot, entry: CachedFile, precompressed: bool) -> bool:
    """True when ``entry`` may be trusted for another window: its names still open to
    the same unchanged regular file, and no variant of it has appeared."""
    try:
        opened = docroot.open(entry.names, False)
    except (Refused, NoIndex):
        return False  # gone, forbidden now, or a symlink out: the full path says which
    try:
        st = os.fstat(opened.fd)
    except OSError:
        return False
    finally:
        docroot.release(opened.parent)
        os.close(opened.fd)
    if not stat.S_ISREG(st.st_mode) or identity(st) != entry.identity:
        return False
    if precompressed:
        known = docroot.variants.known(opened.names)
        if known is None:
            return False  # an unlisted directory: the full path probes
        name = opened.names[-1]
        if any(name + suffix in known for suffix in VARIANT_SUFFIXES.values()):
            return False  # a .br/.zst/.gz appeared: the answer now varies
    return True
