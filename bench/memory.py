"""Peak memory of each server's whole process tree, sampled while the load runs.

Owns a background thread that sums ``Pss:`` over every process in each watched
tree (master and workers) about every 100 ms and keeps the peak, and the set of
pids ever seen per tree (a worker replaced mid-run shows up as an extra pid). PSS
counts shared pages once across the tree, so forked workers are not double-counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bench.docroot import MIB
from bench.processes import process_tree, pss_bytes

SAMPLE_INTERVAL_SECONDS = 0.1
# Walking all of /proc for the tree costs more than reading a few smaps_rollup
# files, and workers come and go rarely, so the tree is refreshed every N samples.
SAMPLES_PER_TREE_REFRESH = 10


@dataclass
class TreeMemory:
    root_pid: int
    pids: list[int] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)
    peak_bytes: int = 0
    peak_process_count: int = 0


class PssSampler:
    """Samples the PSS of named process trees on a thread until ``stop()``."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.trees = {name: TreeMemory(root) for name, root in roots.items()}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.sample_until_stopped,
                                       name="pss-sampler", daemon=True)

    def __enter__(self) -> PssSampler:
        self.refresh_trees()
        self.sample_once()
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join()

    def refresh_trees(self) -> None:
        for tree in self.trees.values():
            tree.pids = process_tree(tree.root_pid)
            tree.pids_seen.update(tree.pids)

    def sample_once(self) -> None:
        for tree in self.trees.values():
            sizes = [size for size in map(pss_bytes, tree.pids) if size is not None]
            if sum(sizes) > tree.peak_bytes:
                tree.peak_bytes = sum(sizes)
                tree.peak_process_count = len(sizes)

    def sample_until_stopped(self) -> None:
        samples = 0
        while not self.stopping.wait(SAMPLE_INTERVAL_SECONDS):
            samples += 1
            if samples % SAMPLES_PER_TREE_REFRESH == 0:
                self.refresh_trees()
            self.sample_once()

    def peak_mib(self, name: str) -> float | None:
        tree = self.trees.get(name)
        return tree.peak_bytes / MIB if tree and tree.peak_bytes else None

    def peak_process_count(self, name: str) -> int:
        tree = self.trees.get(name)
        return tree.peak_process_count if tree else 0

    def pids_seen(self, name: str) -> set[int]:
        tree = self.trees.get(name)
        return set(tree.pids_seen) if tree else set()
