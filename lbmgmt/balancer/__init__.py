"""The balancer daemon (listener): takes edge reports, hands out redirects."""
