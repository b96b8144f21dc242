"""Every client protocol through a real balancer, with the real clients that follow it.

RTSP: ffmpeg and GStreamer's rtspsrc follow the balancer's 302 to a GStreamer
RTSP-server edge and frames arrive; ffmpeg publishes to an edge that
``lbmgmt resolve rtsp://…`` names (ffmpeg does not follow a redirect when
publishing). WHIP/WHEP: curl follows the 307 with the method and the offer.
RTMPT: ffmpeg prints the edge URL with the rtmpt scheme and the port it came
through, on the second of two client ports (port rollover).

scripts/test installs the Debian packages (GStreamer's RTSP server through
python3-gi, x264enc, rtspsrc) and sets LBMGMT_REQUIRE_REAL_CLIENTS=1, so on CI a
missing one fails these tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lbmgmt.fleet.ports import free_port
from tests.e2e.fleet import DEADLINE, HOST, Balancer, Fleet, wait_until
from tests.e2e.test_management import Rpc

SYSTEM_PYTHON = "/usr/bin/python3"
EDGE_SCRIPT = Path(__file__).with_name("rtsp_edge.py")


def _gst_rtsp_server() -> bool:
    if not Path(SYSTEM_PYTHON).exists() or shutil.which("gst-launch-1.0") is None:
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import GstRtspServer, Gst; Gst.init(None); "
         "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtspsrc')"
         " and Gst.ElementFactory.find('h264parse')"],
        capture_output=True, timeout=60)
    return probe.returncode == 0


HAVE = shutil.which("ffmpeg") is not None and shutil.which("curl") is not None \
    and _gst_rtsp_server()
if not HAVE and os.environ.get("LBMGMT_REQUIRE_REAL_CLIENTS"):
    raise RuntimeError("ffmpeg, curl and GStreamer's RTSP server are required (apt-get install "
                       "ffmpeg curl python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools "
                       "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
                       "gstreamer1.0-plugins-ugly)")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE, reason="needs ffmpeg, curl and GStreamer")]
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info"]


@pytest.fixture
def rtsp_edge():
    """A GStreamer RTSP server on loopback serving a live H.264 picture at ``mount``."""
    procs: list[subprocess.Popen[str]] = []

    async def start(mount: str = "/live/cam") -> int:
        port = free_port()
        proc = subprocess.Popen([SYSTEM_PYTHON, str(EDGE_SCRIPT), HOST, str(port), mount],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), DEADLINE)
        assert line.startswith("ready"), (line, proc.stderr.read() if proc.poll() else "")
        return port
    yield start
    for proc in procs:
        proc.kill()
        proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


async def ready(fleet: Fleet, lb: Balancer, count: int) -> None:
    async def listed():
        return len(await fleet.servers(lb)) == count
    await wait_until(listed, what=f"{count} edge(s) listed")


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, list(args), capture_output=True, text=True,
                                   timeout=DEADLINE * 2)


async def redirects(fleet: Fleet, lb: Balancer) -> dict[str, int]:
    return await Rpc(fleet.session, lb.mgmt_url).ok("getAttribute", "lbmgmt:type=Balancer",
                                                    "RedirectsServed")


async def test_ffmpeg_and_gstreamer_play_rtsp_through_the_balancer(fleet, rtsp_edge):
    lb = fleet.balancer()
    edge_port = await rtsp_edge("/live/cam")
    fleet.edge("e", [lb], address=f"{HOST}:{edge_port}")
    await ready(fleet, lb, 1)
    url = f"rtsp://{HOST}:{lb.http_port}/live/cam"  # the client port: HTTP, RTMP and RTSP
    played = await run(*FFMPEG, "-rtsp_transport", "tcp", "-i", url, "-frames:v", "5",
                       "-f", "null", "-")
    assert played.returncode == 0, played.stderr[-2000:]
    assert f"Redirecting to rtsp://{HOST}:{edge_port}/live/cam" in played.stderr
    assert "frame=    5" in played.stderr  # decoded from the edge
    gst = await run("gst-launch-1.0", "-q", "rtspsrc", f"location={url}", "protocols=tcp",
                    "!", "rtph264depay", "!", "h264parse", "!", "fakesink", "num-buffers=5")
    assert gst.returncode == 0, gst.stderr[-2000:] + gst.stdout[-2000:]
    assert (await redirects(fleet, lb))["rtsp"] == 2  # each went through the balancer


async def test_ffmpeg_publishes_rtsp_to_the_edge_that_resolve_names(fleet, background):
    lb = fleet.balancer()
    edge_port = free_port()
    fleet.edge("e", [lb], address=f"{HOST}:{edge_port}")
    await ready(fleet, lb, 1)
    # the edge: ffmpeg listening as an RTSP server, taking one publisher's frames
    edge = background(*FFMPEG, "-rtsp_flags", "listen", "-timeout", "60",
                      "-i", f"rtsp://{HOST}:{edge_port}/live/pub", "-frames:v", "5",
                      "-f", "null", "-")
    resolved = await run(sys.executable, "-m", "lbmgmt", "resolve",
                         f"rtsp://{HOST}:{lb.http_port}/live/pub")
    assert resolved.returncode == 0, resolved.stderr
    target = resolved.stdout.strip()
    assert target == f"rtsp://{HOST}:{edge_port}/live/pub"
    publisher = background(*FFMPEG, "-loglevel", "error", "-re", "-f", "lavfi",
                           "-i", "testsrc=size=160x120:rate=10", "-c:v", "mpeg4", "-g", "5",
                           "-f", "rtsp", "-rtsp_transport", "tcp", target)
    returncode = await asyncio.to_thread(edge.wait, DEADLINE * 2)
    stderr = edge.stderr.read().decode(errors="replace")
    assert returncode == 0, stderr[-2000:]
    assert "frame=    5" in stderr  # the edge decoded the publisher's frames
    publisher.kill()


class _Resource(http.server.BaseHTTPRequestHandler):
    """A WHIP/WHEP edge stand-in: records the request it gets, answers 201."""

    seen: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.command, self.path, body))
        self.send_response(201)
        self.send_header("Location", f"http://{HOST}:{self.server.server_port}/resource/1")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"v=0")

    def log_message(self, *args: object) -> None:
        pass


async def test_curl_follows_whip_and_whep_307s_with_the_offer(fleet):
    resource = http.server.ThreadingHTTPServer((HOST, 0), _Resource)
    threading.Thread(target=resource.serve_forever, daemon=True).start()
    try:
        lb = fleet.balancer(config={"webrtc": {"whip_path": "/whip/{path}"}})
        fleet.edge("e", [lb], address=f"{HOST}:{resource.server_port}")
        await ready(fleet, lb, 1)
        base = f"http://{HOST}:{lb.http_port}"
        head = await run("curl", "-s", "-i", "-X", "POST", "-H", "Content-Type: application/sdp",
                         "--data-binary", "v=0 offer", f"{base}/whip/live/cam?token=x")
        assert head.stdout.startswith("HTTP/1.1 307"), head.stdout
        assert f"Location: http://{HOST}:{resource.server_port}/whip/live/cam?token=x" \
            in head.stdout
        assert "Access-Control-Expose-Headers: Location" in head.stdout
        preflight = await run("curl", "-s", "-i", "-X", "OPTIONS",
                              "-H", "Origin: https://player.example",
                              "-H", "Access-Control-Request-Method: POST", f"{base}/whep/cam")
        assert preflight.stdout.startswith("HTTP/1.1 200")
        assert "Access-Control-Allow-Methods: POST, OPTIONS" in preflight.stdout
        for kind in ("whip", "whep"):
            followed = await run("curl", "-s", "-L", "-H", "Content-Type: application/sdp",
                                 "--data-binary", f"offer for {kind}",
                                 f"{base}/{kind}/live/cam")
            assert followed.returncode == 0 and followed.stdout == "v=0"
        assert _Resource.seen[-2:] == [
            ("POST", "/whip/live/cam", b"offer for whip"),
            ("POST", "/live/cam/whep", b"offer for whep")]  # (the default: MediaMTX's)
    finally:
        resource.shutdown()
        resource.server_close()


async def test_rtmpt_on_a_second_client_port_is_sent_to_the_edge_on_that_port(fleet):
    first, second = free_port(), free_port()
    lb = fleet.balancer(http_port=first, config={"http": {"listen": [f"{HOST}:{first}",
                                                                     f"{HOST}:{second}"]}})
    fleet.edge("e", [lb], address="edge1.example:21001")  # the edge's RTMP port
    await ready(fleet, lb, 1)
    # the second port is a client port like the first
    answer = await run("curl", "-s", f"http://{HOST}:{second}/loadbalancer")
    assert answer.stdout == "redirect=edge1.example:21001"
    r = await run(*FFMPEG, "-i", f"rtmpt://{HOST}:{second}/redirect/mystream", "-f", "null",
                  "-")
    assert r.returncode != 0
    # rtmpt, and the port the client came through: not 21001, the edge's RTMP port
    assert f"redirect to rtmpt://edge1.example:{second}/live" in r.stderr, r.stderr[-2000:]
    served = await redirects(fleet, lb)
    assert served["rtmpt"] == 1
