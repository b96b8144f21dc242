"""The client port (1935): where every viewer arrives.

``http`` is the HTTP/1.x connection, sans-IO over ``httptools`` (llhttp);
``answers`` what each request gets from the core; ``statuspage`` the
serverInfoXML document rendered in slices; ``admission`` the connection caps;
``protocol`` the asyncio glue: one protocol per connection that sniffs the
first byte, then speaks HTTP itself or hands the connection to the RTMP front
(``lbmgmt.balancer.rtmp``), feeding every parser a bounded slice per loop turn.
"""
