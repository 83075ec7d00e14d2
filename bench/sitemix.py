"""Web-like docroots for the real-traffic cases: generated once, kept, linked in per run.

Owns two generated trees and what is requested from them:

- ``site``: SITE_FILES files of web-like types (.html .css .js .png .jpg .svg .woff2
  .json) and log-normal sizes (median about 6 KiB, a tail to several hundred KiB) in
  nested directories, some of them ``index.html`` of a directory requested as ``/dir/``;
- ``cold``: COLD_FILES small-to-medium files, far more bytes than any per-worker cache
  of forkserver's holds, so requests spread over them all miss.

Both come from a seeded generator (same seed → same names, sizes and bytes). A tree
lives in a store outside the run (``--site-store``, default a directory under the
system's temporary directory) next to a manifest of its spec and files; a run whose
spec matches the manifest reuses it, otherwise it is generated again. The run's docroot
gets hard links to it (a copy when the store is on another filesystem), so every
server serves it from the same docroot as the other cases.

The request sequences (uniform or Zipf-like over a tree's URLs, seeded) are written as
one URL path per line for bench/wrk_site.lua, so every server gets the same sequence.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.docroot import KIB, ServedFile

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
SITE_FILES = 3_000
COLD_FILES = 40_000
SEED = 15
# Requests per generated sequence: more than a round of wrk sends, so within a round
# no server sees the sequence wrap around.
SEQUENCE_LENGTH = 200_000
ZIPF_EXPONENT = 0.9  # web object popularity is Zipf-like with an exponent near 1
CHECKED_FILES_PER_TREE = 12  # fetched byte-exact from every server before the load


@dataclass(frozen=True)
class FileKind:
    suffix: str
    share: float  # of the files in the tree
    median_bytes: int
    sigma: float  # of the log-normal size distribution (natural log)
    max_bytes: int


# Shares and sizes after the HTTP Archive's page-weight figures, scaled down: many
# small JSON/SVG/HTML/PNG files, fewer large scripts, photos and fonts.
SITE_KINDS = (
    FileKind(".html", 0.14, 9 * KIB, 0.8, 256 * KIB),
    FileKind(".css", 0.08, 8 * KIB, 1.0, 256 * KIB),
    FileKind(".js", 0.16, 10 * KIB, 1.3, 768 * KIB),
    FileKind(".png", 0.18, 6 * KIB, 1.2, 512 * KIB),
    FileKind(".jpg", 0.12, 24 * KIB, 1.0, 768 * KIB),
    FileKind(".svg", 0.12, 2 * KIB, 0.9, 64 * KIB),
    FileKind(".woff2", 0.04, 28 * KIB, 0.5, 128 * KIB),
    FileKind(".json", 0.16, 2 * KIB, 1.1, 128 * KIB),
)
COLD_KINDS = (
    FileKind(".html", 0.25, 4 * KIB, 0.7, 64 * KIB),
    FileKind(".js", 0.15, 4 * KIB, 0.8, 64 * KIB),
    FileKind(".png", 0.35, 3 * KIB, 0.8, 64 * KIB),
    FileKind(".json", 0.25, 2 * KIB, 0.8, 64 * KIB),
)
MIN_FILE_BYTES = 64
INDEX_SHARE = 0.25  # of the HTML files: a directory's index.html, requested as /dir/


@dataclass(frozen=True)
class TreeSpec:
    name: str  # also the tree's directory in the docroot
    files: int
    seed: int
    kinds: tuple[FileKind, ...]
    top_directories: int
    subdirectories: int  # per top directory

    def fingerprint(self) -> str:
        text = json.dumps([MANIFEST_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SITE_TREE = TreeSpec("site", SITE_FILES, SEED, SITE_KINDS, top_directories=12,
                     subdirectories=6)
COLD_TREE = TreeSpec("cold", COLD_FILES, SEED + 1, COLD_KINDS, top_directories=40,
                     subdirectories=10)


@dataclass(frozen=True)
class TreeFile:
    path: str  # relative to the tree, "/"-separated
    size: int
    sha256: str

    @property
    def url_tail(self) -> str:
        """What is requested below the tree: a directory's index.html as ``dir/``."""
        if self.path.endswith("/index.html"):
            return self.path[: -len("index.html")]
        return self.path


@dataclass(frozen=True)
class Tree:
    spec: TreeSpec
    files: tuple[TreeFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)

    @property
    def median_bytes(self) -> int:
        sizes = sorted(file.size for file in self.files)
        return sizes[len(sizes) // 2]

    def urls(self) -> list[str]:
        return [f"/{self.spec.name}/{file.url_tail}" for file in self.files]

    def sample(self) -> dict[str, ServedFile]:
        """A few files (the smallest, largest, an index, a spread of others) for the
        byte-exact check, keyed like bench/docroot.py's files."""
        by_size = sorted(self.files, key=lambda file: file.size)
        picks = [by_size[0], by_size[-1]]
        picks += [file for file in self.files if file.url_tail.endswith("/")][:2]
        step = max(1, len(self.files) // CHECKED_FILES_PER_TREE)
        picks += list(self.files[::step])[: CHECKED_FILES_PER_TREE - len(picks)]
        return {f"{self.spec.name}/{file.url_tail}":
                ServedFile(f"{self.spec.name}/{file.url_tail}", file.size, file.sha256)
                for file in picks}


def default_store() -> Path:
    return Path(tempfile.gettempdir()) / f"forkserver-bench-sites-{os.getuid()}"


def plan_files(spec: TreeSpec, rng: random.Random) -> list[tuple[str, int]]:
    """(relative path, size) of every file: kinds by share, log-normal sizes."""
    kinds = list(spec.kinds)
    weights = [kind.share for kind in kinds]
    directories = [f"d{top:02d}" for top in range(spec.top_directories)]
    directories += [f"d{top:02d}/s{sub:02d}" for top in range(spec.top_directories)
                    for sub in range(spec.subdirectories)]
    planned: list[tuple[str, int]] = []
    index_directories: set[str] = set()
    for number in range(spec.files):
        kind = rng.choices(kinds, weights)[0]
        size = int(rng.lognormvariate(math.log(kind.median_bytes), kind.sigma))
        size = max(MIN_FILE_BYTES, min(kind.max_bytes, size))
        directory = rng.choice(directories)
        name = f"{directory}/f{number:05d}{kind.suffix}"
        if (kind.suffix == ".html" and directory not in index_directories
                and rng.random() < INDEX_SHARE):
            index_directories.add(directory)
            name = f"{directory}/p{number:05d}/index.html"
        planned.append((name, size))
    return planned


def generate_tree(spec: TreeSpec, directory: Path) -> Tree:
    """Write the tree into ``directory`` (which must not exist) and its manifest."""
    rng = random.Random(spec.seed)
    content = random.Random(spec.seed * 7919)
    files = []
    for relative, size in plan_files(spec, rng):
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.randbytes(size)
        path.write_bytes(data)
        files.append(TreeFile(relative, size, hashlib.sha256(data).hexdigest()))
    tree = Tree(spec, tuple(files))
    manifest = {"version": MANIFEST_VERSION, "fingerprint": spec.fingerprint(),
                "files": [[file.path, file.size, file.sha256] for file in files]}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return tree


def load_tree(spec: TreeSpec, directory: Path) -> Tree | None:
    """The tree in ``directory`` if its manifest matches ``spec`` and every file is
    there with its size; None otherwise."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != spec.fingerprint():
        return None
    files = tuple(TreeFile(path, size, digest) for path, size, digest in manifest["files"])
    for file in files:
        try:
            if (directory / file.path).stat().st_size != file.size:
                return None
        except OSError:
            return None
    return Tree(spec, files)


def ensure_tree(spec: TreeSpec, store: Path) -> tuple[Tree, Path, bool]:
    """The tree in the store (generated there unless a matching one is present), its
    directory, and whether it was reused."""
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    if store.stat().st_uid != os.getuid():
        raise RuntimeError(f"{store} belongs to another user; choose --site-store")
    directory = store / spec.name
    tree = load_tree(spec, directory)
    if tree is not None:
        return tree, directory, True
    if directory.exists():
        shutil.rmtree(directory)
    partial = store / f"{spec.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    tree = generate_tree(spec, partial)
    partial.rename(directory)
    return tree, directory, False


def link_tree(tree: Tree, source: Path, docroot: Path) -> None:
    """Hard-link (or copy) the tree's files into ``docroot/<name>``, readable by all
    (nginx workers run as nobody)."""
    target = docroot / tree.spec.name
    for file in tree.files:
        destination = target / file.path
        if not destination.parent.is_dir():
            destination.parent.mkdir(parents=True, exist_ok=True)
        original = source / file.path
        try:
            os.link(original, destination)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(original, destination)
        destination.chmod(0o644)
    for path in (target, *(path for path in target.rglob("*") if path.is_dir())):
        path.chmod(0o755)


def write_sequence(tree: Tree, popularity: str, path: Path) -> None:
    """SEQUENCE_LENGTH URL paths, one a line: ``uniform`` draws every URL alike,
    ``zipf`` gives the k-th most popular (a seeded shuffle decides which) weight
    1/k**ZIPF_EXPONENT."""
    rng = random.Random(f"{tree.spec.seed}-{popularity}")
    urls = tree.urls()
    if popularity == "uniform":
        drawn = rng.choices(urls, k=SEQUENCE_LENGTH)
    elif popularity == "zipf":
        rng.shuffle(urls)
        weights = [1 / rank ** ZIPF_EXPONENT for rank in range(1, len(urls) + 1)]
        drawn = rng.choices(urls, weights, k=SEQUENCE_LENGTH)
    else:
        raise ValueError(f"unknown popularity {popularity!r}")
    path.write_text("\n".join(drawn) + "\n")


def prepare_tree(spec: TreeSpec, store: Path, docroot: Path) -> Tree:
    """The tree in the store (reused or generated), linked into ``docroot``."""
    tree, directory, reused = ensure_tree(spec, store)
    how = "reused" if reused else "generated"
    print(f"bench: {how} {spec.name} tree: {len(tree.files):,} files, "
          f"{tree.total_bytes / KIB / KIB:.0f} MiB, median {tree.median_bytes / KIB:.1f} KiB "
          f"({directory})", flush=True)
    with contextlib.suppress(FileExistsError):
        (docroot / spec.name).mkdir()
    link_tree(tree, directory, docroot)
    return tree
