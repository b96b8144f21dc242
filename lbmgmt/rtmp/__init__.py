"""RTMP, sans-IO: the parts a balancer needs to answer (and a resolver to ask) ``connect``.

``amf0`` and ``chunks`` are the encodings; ``handshake`` the opening bytes;
``commands`` the AMF0 command messages; ``server`` and ``client`` the two
connection state machines, which turn bytes into events and calls into bytes;
``sniff`` tells an RTMP connection from an HTTP one by its first byte. None
touches a socket or reads a clock: time comes in as ``now`` and deadlines go
out through ``get_timer()``. The asyncio glue is ``lbmgmt.balancer.rtmp``
(with ``lbmgmt.balancer.relay``) and ``lbmgmt.resolve``.
"""
