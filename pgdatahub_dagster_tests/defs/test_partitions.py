import pytest
from dagster import DagsterInstance

from pgdatahub_dagster.defs.partitions import file_id_for, partition_key_for
from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER


@pytest.mark.parametrize(
    "file_id",
    [
        "leads/2024/jan.xlsx",
        "odd...name.csv",
        "100%/a.csv",
        "tab\there.csv",
        "line\nbreak.csv",
        "ümlaut/ß.ods",
        "a..b",
    ],
)
def test_partition_keys_are_valid_for_dagster_and_reversible(instance: DagsterInstance, file_id: str) -> None:
    key = partition_key_for(file_id)
    assert file_id_for(key) == file_id
    instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, [key])
    assert key in instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name)


def test_plain_paths_are_kept_readable() -> None:
    assert partition_key_for("leads/2024/jan.xlsx") == "leads/2024/jan.xlsx"
