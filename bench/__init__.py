"""``make bench``: every benchmark of the project beside its reference, measured in the same run."""
