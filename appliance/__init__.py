"""Storage appliance: erasure-coded shard store with S3, block and filesystem front ends."""

__version__ = "0.1.0"
