"""Benchmarks: the importer side by side with the alternatives a user would otherwise pick.

Run ``python -m bench`` (see ``bench/__main__.py`` and docs/benchmarks.md).
"""
