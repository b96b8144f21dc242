from __future__ import annotations

import subprocess

import aiohttp
import pytest

from tests.e2e import nginx
from tests.e2e.fleet import Fleet

try:
    import uvloop  # noqa: F401
    LOOPS = ["uvloop", "asyncio"]
except ImportError:  # a plain `pip install .`: the daemons run on asyncio's loop
    LOOPS = ["asyncio"]


@pytest.fixture(params=LOOPS)
def daemon_loop(request) -> str:
    """The event loop the daemon processes run on: every e2e test runs on each."""
    return request.param


@pytest.fixture
async def fleet(tmp_path, daemon_loop):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        f = Fleet(tmp_path, session=session, loop=daemon_loop)
        try:
            yield f
        finally:
            f.cleanup()


@pytest.fixture
def edges(tmp_path):
    started: list[nginx.NginxRtmp] = []

    def start(name: str) -> nginx.NginxRtmp:
        server = nginx.NginxRtmp(tmp_path / f"nginx-{name}").start()
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def background():
    procs: list[subprocess.Popen] = []

    def run(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        procs.append(proc)
        return proc
    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
