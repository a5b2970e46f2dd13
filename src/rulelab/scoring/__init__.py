"""Scoring: per-point metrics, a result's rows of each table (the summary row built once), chunk scoring for exhaustive sweeps."""
