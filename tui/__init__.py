"""lb-console: the terminal console for lbmgmt's management plane."""
