"""The bottom layer: float formats and exact rounding, code fingerprints, provenance, atomic files, processes, the cache folder, errors. Imports nothing of rulelab."""
