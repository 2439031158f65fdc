"""Partition keys of the file partitions: one partition per file, one dynamic partitions
definition per source (``SourcePlugin.partitions_def``).

A partition key is the file's ``source_file_id`` (locally the relative path, in Drive the
file id), made valid
for Dagster by percent-encoding the few things Dagster refuses in keys (``...`` and
control characters) and ``%`` itself, so the encoding can always be undone. Drive file ids
are already valid keys; they go through the same encoding anyway.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_NEEDS_ESCAPE = re.compile(r"%|\.(?=\.\.)|[\x00-\x1f\x7f]")


def partition_key_for(file_id: str) -> str:
    return _NEEDS_ESCAPE.sub(lambda match: "".join(f"%{byte:02X}" for byte in match[0].encode()), file_id)


def file_id_for(partition_key: str) -> str:
    return unquote(partition_key)
