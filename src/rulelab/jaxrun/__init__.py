"""Where variants run: backends and their facts, the one program builder (evaluate), cost (compile time, op counts, memory)."""
