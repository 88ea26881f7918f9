"""Benchmarks, run as ``python -m bench apply`` (patcher) or ``python -m bench library`` (LoRA library).

Not timed tests: each prints its figures next to the floors and baselines it is judged against.
"""
