"""The thin Dagster layer: partitions, resources, assets, jobs and sensors over the engine."""

import warnings

from dagster import BetaWarning

# backfill_policy (and owners, set by Dagster itself on sensors) are beta in Dagster 1.13; we
# rely on them knowingly, and the warning would be printed to users on every command.
warnings.filterwarnings("ignore", category=BetaWarning)
