"""Shared scientific building blocks: models, estimators and solvers that several claims use.

Each is tested on its own (tests/test_<block>.py) and knows nothing of the workflow engine
(registry, steps, runtime's job plumbing), which sits one level up in `replica`.
"""
