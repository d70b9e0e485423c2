"""Fixtures of the S3 protocol tests; the helpers live in s3kit.py (a plain module, so test
files can import them: two folders' conftest.py would both be the module `conftest`)."""

from s3kit import bucket, make_s3_bucket, raw, s3, s3c  # noqa: F401 - fixtures
