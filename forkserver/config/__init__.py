"""Configuration: YAML file + command-line overrides → a frozen ``Config``.

Owns the schema (keys, types, ranges, defaults), path resolution relative to the
file, and every validation message. Must not touch sockets, signals or processes:
it may read files and stat paths, nothing more.

The package's interface is this module's ``__all__``; the submodules are, in the
order they build on each other: model (the values), checks and entries (rules for
one value), schema (every key), yamlguard and yamlfile (reading the file), hints
(unknown keys), preflight (the live system) and layers (load_config).
"""

from forkserver.config.entries import ERROR_PAGE_STATUSES
from forkserver.config.layers import load_config
from forkserver.config.model import (
    ACCESS_LOG_FORMATS,
    MAX_WORKERS,
    UNIX_PREFIX,
    Config,
    Limits,
    Status,
    Timeouts,
)
from forkserver.config.preflight import environment_problems
from forkserver.config.schema import SCHEMA

__all__ = [
    "ACCESS_LOG_FORMATS", "ERROR_PAGE_STATUSES", "MAX_WORKERS", "SCHEMA", "UNIX_PREFIX",
    "Config", "Limits", "Status", "Timeouts",
    "environment_problems", "load_config",
]
