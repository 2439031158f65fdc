"""The file partitions, shared by assets, sensors and tests: one partition per file,
one partitions definition per source.

A partition key is the file's ``source_file_id`` (locally the relative path, in Drive the
file id), made valid
for Dagster by percent-encoding the few things Dagster refuses in keys (``...`` and
control characters) and ``%`` itself, so the encoding can always be undone.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from dagster import DynamicPartitionsDefinition

LOCAL_FILES = "local_files"
DRIVE_FILES = "drive_files"
local_files = DynamicPartitionsDefinition(name=LOCAL_FILES)
# Drive file ids are already valid keys; they go through the same encoding anyway.
drive_files = DynamicPartitionsDefinition(name=DRIVE_FILES)

_NEEDS_ESCAPE = re.compile(r"%|\.(?=\.\.)|[\x00-\x1f\x7f]")


def partition_key_for(file_id: str) -> str:
    return _NEEDS_ESCAPE.sub(lambda match: "".join(f"%{byte:02X}" for byte in match[0].encode()), file_id)


def file_id_for(partition_key: str) -> str:
    return unquote(partition_key)
