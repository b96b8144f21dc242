"""RTSP, sans-IO: the requests a balancer answers (RFC 2326, RTSP/1.0).

``connection`` parses requests with ``httptools`` (llhttp reads RTSP's request
line and headers as it reads HTTP's) and writes answers that carry each
request's ``CSeq``; it keeps the connection's budgets (head size and time,
body size, idle time). It touches no socket and reads no clock. The balancer's
glue is ``lbmgmt.balancer.front.protocol`` and its answers
``lbmgmt.balancer.front.rtsp``.
"""
