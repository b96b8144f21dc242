"""The package's metadata reads right on its own, as its index page shows it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_long_description_has_only_absolute_links_that_lead_somewhere():
    readme = PROJECT["readme"]
    assert readme["content-type"] == "text/markdown"
    text = (ROOT / readme["file"]).read_text()
    base = PROJECT["urls"]["Repository"]
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links, "no links at all"
    for link in links:
        assert link.startswith(base + "/"), f"not under {base}: {link}"
        if "/blob/main/" in link:  # a file of the repository: it exists
            assert (ROOT / link.split("/blob/main/", 1)[1]).is_file(), link
    # nothing that only works in a checkout of the source
    assert "./scripts" not in text and ".venv" not in text


def test_the_metadata_names_its_urls_license_and_pythons():
    assert {"Homepage", "Repository", "Issues", "Documentation"} <= set(PROJECT["urls"])
    classifiers = PROJECT["classifiers"]
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    minimum = PROJECT["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {minimum}" in classifiers
    assert all(c.count(" :: ") >= 1 for c in classifiers)
