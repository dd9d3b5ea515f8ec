"""tzc_train: a small tunix LoRA trainer that consumes tzc_data shards on a JAX device mesh.

Not written yet (issue 6). It will read the packed rows described in the README (tokens, segment ids,
positions, loss mask) and must never attend across packed examples.
"""
