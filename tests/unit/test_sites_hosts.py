"""forkserver.sites.hosts: the name that picks a site, and the table of names."""

from __future__ import annotations

import pytest

from forkserver.config.sites import config_name
from forkserver.sites.hosts import SiteTable, site_name


@pytest.mark.parametrize(("host", "name"), [
    ("example.org", "example.org"),
    ("EXAMPLE.Org", "example.org"),
    ("example.org:8080", "example.org"),
    ("example.org.", "example.org"),
    ("Example.ORG.:443", "example.org"),
    ("example.org:", "example.org"),  # an empty port is allowed (RFC 3986 §3.2.3)
    ("[::1]", "[::1]"),
    ("[::1]:8080", "[::1]"),
    ("[0:0:0:0:0:0:0:1]:80", "[::1]"),
    ("[2001:DB8::A]", "[2001:db8::a]"),
    ("127.0.0.1:80", "127.0.0.1"),
    ("", ""),  # HTTP/1.0 without Host: only the default answers
])
def test_site_name_normalizes(host: str, name: str) -> None:
    assert site_name(host) == name


@pytest.mark.parametrize("host", [
    "[::1", "[::1]x", "[::1]:8o", "[zz::1]", "example.org:80x", "a" * 300,
    "host:\uff18\uff10",  # fullwidth digits
])
def test_site_name_refuses_what_names_nothing(host: str) -> None:
    assert site_name(host) is None


def test_site_name_is_linear() -> None:
    assert site_name("a." * 5000) is None  # overlong: refused before any work
    assert site_name("[" + ":" * 5000 + "]") is None


def table() -> SiteTable[str]:
    return SiteTable([
        (["example.org", "www.example.org"], "main"),
        (["*.example.net"], "net"),
        (["*.b.example.net"], "deep"),
        (["[::1]"], "v6"),
    ], default="fallback")


@pytest.mark.parametrize(("host", "site", "claimed"), [
    ("example.org", "main", True),
    ("WWW.example.org.:8080", "main", True),
    ("a.example.net", "net", True),
    ("a.c.example.net", "net", True),
    ("x.b.example.net", "deep", True),  # the longest suffix wins
    ("y.x.b.example.net", "deep", True),
    ("b.example.net", "net", True),  # *.b.example.net needs a label left of b
    ("example.net", "fallback", False),  # *.example.net is not example.net
    ("[::1]:80", "v6", True),
    ("other.org", "fallback", False),
    ("", "fallback", False),
])
def test_lookup(host: str, site: str, claimed: bool) -> None:
    found = table().find(host)
    assert found is not None and (found.site, found.claimed) == (site, claimed)
    assert table().lookup(host) == site


def test_no_default_means_421() -> None:
    only = SiteTable([(["example.org"], "main")])
    assert only.lookup("other.org") is None
    assert only.lookup("") is None
    assert only.claimant("example.org") == "main"


def test_a_name_claimed_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        SiteTable([(["example.org"], "a"), (["example.org"], "b")])
    with pytest.raises(ValueError):
        SiteTable([(["*.example.org"], "a"), (["*.example.org"], "b")])


def test_a_hundred_sites_are_dict_lookups() -> None:
    sites = SiteTable([([f"site{i}.example.org", f"*.w{i}.example.org"], i) for i in range(100)])
    assert sites.lookup("site57.example.org") == 57
    assert sites.lookup("a.w99.example.org") == 99
    assert sites.lookup("a.b.c.d.e.f.example.com") is None


@pytest.mark.parametrize("value", ["Example.ORG.", "[0:0::1]", "*.A.example", "10.0.0.1"])
def test_configured_names_are_what_hosts_normalize_to(value: str) -> None:
    name = config_name(value)
    assert site_name(name.removeprefix("*.")) == name.removeprefix("*.")
