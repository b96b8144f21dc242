"""The edge daemon (sender): measures local load and reports it to balancers."""
