"""tap-rapid7-reconcile: the API's counts against the dataset, per log and window."""
