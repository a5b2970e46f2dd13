"""mpmath references: settled by agreement one point at a time, numerical derivatives, the disk cache, whole sweeps in parallel, the validated fast float64 tier."""
