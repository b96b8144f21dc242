"""A real nginx-rtmp server for end-to-end tests, on loopback ports of its own.

By default one ``live`` application (``live on``) and the ``/stat`` page the
nginx-rtmp monitor reads; ``applications`` and ``locations`` replace the first
and add to the second (an origin, a pulling edge, HLS), ``access_logs`` keeps a
line per RTMP session (``rtmp.log``) and per HTTP request (``http.log``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lbmgmt.fleet.ports import HOST, free_port

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # /usr/sbin may not be on PATH

# One line per RTMP session, written when it ends: what it did, where, and bytes sent.
RTMP_LOG_FORMAT = "$command|$app|$name|$args|$tcurl|$bytes_sent"
HTTP_LOG_FORMAT = "$request_uri|$status|$body_bytes_sent"


def available() -> bool:
    return Path(NGINX).exists() and MODULE.exists()


@dataclass
class NginxRtmp:
    prefix: Path
    rtmp_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen | None = None
    applications: str = "application live { live on; }"  # the rtmp server's applications
    locations: str = ""  # http locations beside /stat
    access_logs: bool = False

    @property
    def stat_url(self) -> str:
        return f"http://{HOST}:{self.http_port}/stat"

    def rtmp_url(self, path: str = "live") -> str:
        return f"rtmp://{HOST}:{self.rtmp_port}/{path}"

    @property
    def rtmp_log(self) -> Path:
        return self.prefix / "rtmp.log"

    @property
    def http_log(self) -> Path:
        return self.prefix / "http.log"

    def start(self) -> NginxRtmp:
        self.rtmp_port = self.rtmp_port or free_port()
        self.http_port = self.http_port or free_port()
        self.prefix.mkdir(parents=True, exist_ok=True)
        temp = "".join(f"    {kind}_temp_path {self.prefix}/{kind};\n" for kind in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        if self.access_logs:
            rtmp_log = (f"  log_format lbmgmt '{RTMP_LOG_FORMAT}';\n"
                        f"  access_log {self.rtmp_log} lbmgmt;\n")
            http_log = (f"  log_format lbmgmt '{HTTP_LOG_FORMAT}';\n"
                        f"  access_log {self.http_log} lbmgmt;\n")
        else:
            rtmp_log, http_log = "", "  access_log off;\n"
        (self.prefix / "nginx.conf").write_text(f"""
load_module {MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {self.prefix}/error.log info;
pid {self.prefix}/nginx.pid;
events {{ worker_connections 256; }}
rtmp {{
{rtmp_log}  server {{
    listen {HOST}:{self.rtmp_port};
    chunk_size 4096;
    {self.applications}
  }}
}}
http {{
{http_log}{temp}  server {{
    listen {HOST}:{self.http_port};
    location /stat {{ rtmp_stat all; }}
    {self.locations}
  }}
}}
""")
        self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c",
                                      str(self.prefix / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((HOST, self.http_port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx-rtmp did not start: "
                                       + (self.prefix / "error.log").read_text()[-2000:]
                                       ) from None
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
