"""One controller per S3 resource (service, bucket, listing, object, multipart), each mapping
AWS operation names to handlers (see appliance.s3.router)."""
