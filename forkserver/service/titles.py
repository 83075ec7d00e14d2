"""Process titles (``forkserver: master [...]``) through the optional setproctitle.

Owns nothing else.
"""

from __future__ import annotations


def set_title(title: str) -> None:
    """Set the process title when setproctitle is installed; otherwise do nothing."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)
