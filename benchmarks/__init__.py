"""Developer-only benchmark helpers (never imported by the ebmssl library).

* :mod:`benchmarks.peers`: side-by-side suites against lightly (``tools/benchmark.py --suite peers``).
* :mod:`benchmarks.lightly_parity`: our objectives against lightly's loss modules on the same tensors.
* :mod:`benchmarks.guard`: the step guard's cost, on against off (``python -m benchmarks.guard``).
* :mod:`benchmarks.inputs`: the random embeddings and width fitting the objective suites share.

The user command is ``tools/benchmark.py`` (the guard benchmark is a developer script); docs/benchmarks.md holds the figures.
"""
