"""lbmgmt: a load balancer for media-streaming edge servers.

The package is split by role: ``status`` is the sans-IO report protocol both
daemons speak, ``edge`` the sender that runs beside each media server,
``balancer`` the listener that hands out redirects.
"""

__version__ = "0.1.0"
