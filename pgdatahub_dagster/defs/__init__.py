"""The thin Dagster layer: partitions, resources, assets, jobs and sensors over the engine."""
