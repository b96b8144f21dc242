"""The management plane: MBeans, as JMX had them, served over JSON-RPC 2.0.

``objectname``, ``mbean``, ``notifications`` and ``server`` are the model (no
I/O); ``api`` are the JSON-RPC methods over it, ``jsonrpc`` the one adapter to
jsonrpcserver, ``http`` the aiohttp port with ``auth`` and ``metrics``;
``client`` is what scripts and lb-console use to talk to it.
"""
