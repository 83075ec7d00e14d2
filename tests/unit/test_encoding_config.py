"""The ``compress:`` and ``etag:`` keys through the real loader: values, defaults and
problems with their file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserver.config import Config, load_config
from forkserver.encoding.settings import DEFAULT_TYPES, CompressSettings
from forkserver.errors import ConfigError


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "site.yaml"
    path.write_text(f"docroot: {tmp_path}\n" + text)
    return load_config(str(path))


def test_defaults_are_off_and_mtime(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.compress == CompressSettings(False, DEFAULT_TYPES, 1024, 6)
    assert config.etag == "mtime"


def test_every_key_is_read(tmp_path: Path) -> None:
    config = load(tmp_path, "compress:\n  gzip: true\n  types: [Text/CSS, 'image/*']\n"
                            "  min_size: 0\n  level: 9\netag: content\n")
    assert config.compress == CompressSettings(True, ("text/css", "image/*"), 0, 9)
    assert config.etag == "content"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compress:\n  gzip: 1\n", "site.yaml:3: compress.gzip: 1 is an integer, expected true"),
        ("compress:\n  level: 0\n", "site.yaml:3: compress.level: 0 is out of range 1\N{EN DASH}9"),
        ("compress:\n  level: '6'\n", "site.yaml:3: compress.level: '6' is a string"),
        ("compress:\n  min_size: -1\n", "site.yaml:3: compress.min_size: -1 is out of range"),
        ("compress:\n  types: text/css\n", "site.yaml:3: compress.types: 'text/css' is a string"),
        ("compress:\n  types: []\n", "site.yaml:3: compress.types: [] is empty"),
        ("compress:\n  types: ['*/*']\n", "only 'type/*' may use a wildcard"),
        ("compress:\n  types: [text/css, TEXT/css]\n", "lists 'TEXT/css' twice"),
        ("compress:\n  gzipp: true\n",
         "compress.gzipp: unknown key (did you mean 'compress.gzip'?)"),
        ("etag: hash\n", "site.yaml:2: etag: 'hash' is not one of mtime, content"),
        ("gzip: on\n", "nginx's gzip is gzip: under compress: here"),
        ("types: {}\n", "nginx's types is mime_types: here"),
    ],
)
def test_each_problem_names_the_key_and_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert message in str(raised.value)
