"""Runs: the one lifecycle, the executors (this process, a local pool, Dask), the sampled and exhaustive drivers, and study."""
