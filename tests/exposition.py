"""A strict parser for the Prometheus text exposition format, version 0.0.4.

Strict where the format and the naming conventions are: every line must parse;
TYPE comes before a family's first sample and only once; a family's samples are
contiguous; no label set repeats; counters are named ``*_total`` and never
negative; label values use only the three escapes the format defines. Returns the
families so tests can check the numbers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
# A label value: anything but a bare quote, backslash or newline; escapes \\ \" \n.
LABEL_VALUE = r'(?:[^"\\\n]|\\[\\"n])*'
LABEL = rf'({LABEL_NAME})="({LABEL_VALUE})"'
SAMPLE = re.compile(
    rf"({NAME})(?:\{{((?:{LABEL_NAME}=\"{LABEL_VALUE}\")(?:,{LABEL_NAME}=\"{LABEL_VALUE}\")*)?,?\}})?"
    r" ([^ ]+)(?: (-?[0-9]+))?"
)
HELP = re.compile(rf"# HELP ({NAME}) (.*)")
TYPE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)")
FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?Inf|NaN")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ExpositionError(AssertionError):
    pass


@dataclass
class Family:
    name: str
    kind: str = "untyped"
    help: str | None = None
    samples: dict[frozenset[tuple[str, str]], float] = field(default_factory=dict)

    def value(self, **labels: str) -> float:
        return self.samples[frozenset(labels.items())]

    def total(self, **labels: str) -> float:
        """Sum of the samples whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for key, v in self.samples.items() if wanted <= key)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"\\": "\\", '"': '"', "n": "\n"}[m[1]], value)


def parse_exposition(text: str) -> dict[str, Family]:
    if not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a line feed")
    families: dict[str, Family] = {}
    current: str | None = None  # the family whose samples are being read
    finished: set[str] = set()
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}: {line!r}"
        if not line:
            continue
        if line.startswith("#"):
            help_match, type_match = HELP.fullmatch(line), TYPE.fullmatch(line)
            if help_match:
                family = families.setdefault(help_match[1], Family(help_match[1]))
                if family.help is not None:
                    raise ExpositionError(f"{where}: a second HELP")
                family.help = help_match[2]
            elif type_match:
                family = families.setdefault(type_match[1], Family(type_match[1]))
                if family.samples or family.kind != "untyped":
                    raise ExpositionError(f"{where}: TYPE after samples or twice")
                family.kind = type_match[2]
            elif line.startswith(("# HELP", "# TYPE")):
                raise ExpositionError(f"{where}: malformed HELP or TYPE")
            continue
        match = SAMPLE.fullmatch(line)
        if match is None:
            raise ExpositionError(f"{where}: not a sample line")
        name, labels_text, value_text = match[1], match[2], match[3]
        if not FLOAT.fullmatch(value_text):
            raise ExpositionError(f"{where}: {value_text!r} is not a number")
        if name not in families:
            raise ExpositionError(f"{where}: a sample without a TYPE line before it")
        if name != current:
            if name in finished:
                raise ExpositionError(f"{where}: the samples of {name} are not contiguous")
            if current is not None:
                finished.add(current)
            current = name
        labels = frozenset(
            (label, _unescape(value)) for label, value in re.findall(LABEL, labels_text or "")
        )
        if len(labels) != len(re.findall(LABEL, labels_text or "")):
            raise ExpositionError(f"{where}: a label repeats")
        family = families[name]
        if labels in family.samples:
            raise ExpositionError(f"{where}: this label set already has a sample")
        value = float(value_text.replace("Inf", "inf").replace("NaN", "nan"))
        if family.kind == "counter":
            if not name.endswith("_total"):
                raise ExpositionError(f"{where}: a counter's name must end in _total")
            if math.isnan(value) or value < 0:
                raise ExpositionError(f"{where}: a counter cannot be negative or NaN")
        family.samples[labels] = value
    for family in families.values():
        if family.help is None:
            raise ExpositionError(f"{family.name} has no HELP")
        if family.kind == "untyped":
            raise ExpositionError(f"{family.name} has no TYPE")
    return families
