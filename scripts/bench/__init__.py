"""make bench: the load benchmark of ptsd-cds (see docs/PERFORMANCE.md)."""
