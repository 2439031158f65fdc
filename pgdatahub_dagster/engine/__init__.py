"""The import engine: plain Python, no Dagster.

Stages, one package each: ``read`` (files to Polars frames), ``normalise`` (names and
honest types), ``dedup`` (row keys), ``schema`` (type widening and
schema evolution), ``warehouse`` (PostgreSQL and DuckDB behind one interface) and
``sources`` (where files come from). ``importer`` runs one file through all of them;
``lifecycle`` handles files that disappear, ``revert`` undoes imports, ``report`` sums up.
"""
