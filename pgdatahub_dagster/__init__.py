"""pgdatahub_dagster: keep a warehouse in sync with spreadsheet folders."""
