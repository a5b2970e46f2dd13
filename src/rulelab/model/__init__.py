"""The case model and registry, the reference contract, plans, sweep inputs, tasks, exhaustive specs, user modules: plain data, no JAX."""
