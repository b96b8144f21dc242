"""A real RTSP server for end-to-end tests: GStreamer's, serving a live H.264 test picture.

Run with the system's Python (python3-gi and gir1.2-gst-rtsp-server-1.0 are Debian
packages, not in the project's venv):
    /usr/bin/python3 tests/e2e/rtsp_edge.py HOST PORT /live/stream
It prints "ready <port>" once it listens and serves until killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=10/1 "
            "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )")


def main() -> None:
    host, port, mount = sys.argv[1], sys.argv[2], sys.argv[3]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)  # one encoder for every player
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on {host}:{port}")
    print("ready", server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
