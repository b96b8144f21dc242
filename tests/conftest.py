"""Every test's runtime files (an edge's GUID, a balancer's state file, when a config
leaves them unset) go to a state directory of the test session's own, never the user's
~/.local/state: set here for the tests and the daemons they start."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory):
    old = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    os.environ.pop("STATE_DIRECTORY", None)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
