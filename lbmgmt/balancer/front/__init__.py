"""The client port (1935): where every viewer arrives.

``http`` is the HTTP/1.x connection, sans-IO over ``httptools`` (llhttp);
``answers`` what each request gets from the core; ``admission`` the connection
caps; ``pacing`` the bounded slice of input per loop turn; ``timer`` the
connections' deadlines on one loop handle; ``protocol`` the asyncio glue: one
protocol per connection that sniffs the first byte, then speaks HTTP itself or
hands the connection to the RTMP front (``lbmgmt.balancer.rtmp``). The
serverInfoXML document is ``lbmgmt.balancer.serverinfo``.
"""
