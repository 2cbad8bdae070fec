"""Benchmarks of postroom against real peers, driven by Postfix's ``smtp-source``.

Run ``python bench/run.py`` (see ``bench/README.md``). Not part of the test suite;
``tests/bench/test_smoke.py`` runs a tiny version of it so it cannot rot.
"""
