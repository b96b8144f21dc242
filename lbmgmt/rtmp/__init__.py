"""RTMP, sans-IO: the parts a balancer needs to answer (and a resolver to ask) ``connect``.

``amf0`` and ``chunks`` are the encodings; ``handshake`` the opening bytes;
``commands`` the AMF0 command messages; ``server`` and ``client`` the two
connection state machines, which turn bytes into events and calls into bytes
and never touch a socket.
"""
