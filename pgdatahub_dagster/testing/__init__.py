"""Test doubles for the external services pgdatahub_dagster talks to."""
