"""S3 errors: the AWS error codes with their HTTP statuses and default messages.

Reference: https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html (the table of
codes, statuses and wording). A handler raises ``S3Error("NoSuchKey", Key=key)``; the app turns
it into the XML error body::

    <Error><Code>NoSuchKey</Code><Message>...</Message><Key>k</Key>
           <Resource>/b/k</Resource><RequestId>..</RequestId></Error>
"""

from __future__ import annotations

#: code -> (HTTP status, default message)
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "AccountProblem": (403, "There is a problem with your AWS account that prevents the "
                            "action from completing successfully."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "Error parsing the query-string "
                                               "authentication parameters."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BadRequest": (400, "Bad Request"),
    "BucketAlreadyExists": (409, "The requested bucket name is not available. The bucket "
                                 "namespace is shared by all users of the system. Please select "
                                 "a different name and try again."),
    "BucketAlreadyOwnedByYou": (409, "Your previous request to create the named bucket "
                                     "succeeded and you already own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "ConditionalRequestConflict": (409, "A conflicting operation occurred. If using PutObject "
                                        "you can retry the request. If using multipart upload "
                                        "you should initiate another CreateMultipartUpload "
                                        "request and re-upload each part."),
    "CredentialsNotSupported": (400, "This request does not support credentials."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object "
                            "size."),
    "ExpiredToken": (400, "The provided token has expired."),
    "IllegalLocationConstraintException": (400, "The unspecified location constraint is "
                                                "incompatible for the region specific endpoint "
                                                "this request was sent to."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the "
                            "Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our "
                                "records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the "
                                "bucket."),
    "InvalidChunkSizeError": (403, "Only the last chunk is allowed to have a size less than "
                                   "8192 bytes"),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidEncryptionAlgorithmError": (400, "The encryption request that you specified is "
                                             "not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidObjectState": (403, "The operation is not valid for the current state of the "
                                "object."),
    "InvalidPart": (400, "One or more of the specified parts could not be found. The part "
                         "might not have been uploaded, or the specified entity tag might not "
                         "have matched the part's entity tag."),
    "InvalidPartNumber": (416, "The requested partnumber is not satisfiable"),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. Parts list must "
                              "be specified in order by part number."),
    "InvalidPayer": (403, "All access to this object has been disabled."),
    "InvalidPolicyDocument": (400, "The content of the form does not meet the conditions "
                                   "specified in the policy document."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidSecurity": (403, "The provided security credentials are not valid."),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidToken": (400, "The provided token is malformed or otherwise invalid."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (400, "The XML you provided was not well-formed or did not validate "
                               "against our published schema."),
    "MalformedTrailerError": (400, "The request contained trailing data that was not "
                                   "well-formed or did not conform to our published schema."),
    "MalformedPOSTRequest": (400, "The body of your POST request is not well-formed "
                                  "multipart/form-data."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate "
                          "against our published schema"),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata "
                              "size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchBucketPolicy": (404, "The bucket policy does not exist"),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist"),
    "NoSuchObjectLockConfiguration": (404, "The specified object does not have an ObjectLock "
                                           "configuration"),
    "NoSuchPublicAccessBlockConfiguration": (404, "The public access block configuration was "
                                                  "not found"),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchUpload": (404, "The specified multipart upload does not exist. The upload ID might "
                          "be invalid, or the multipart upload might have been aborted or "
                          "completed."),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NoSuchWebsiteConfiguration": (404, "The specified bucket does not have a website "
                                        "configuration"),
    "NotImplemented": (501, "A header you provided implies functionality that is not "
                            "implemented"),
    "NotModified": (304, "Not Modified"),
    "ObjectLockConfigurationNotFoundError": (404, "Object Lock configuration does not exist "
                                                  "for this bucket"),
    "OperationAborted": (409, "A conflicting conditional operation is currently in progress "
                              "against this resource. Try again."),
    "OwnershipControlsNotFoundError": (404, "The bucket ownership controls were not found"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not "
                                "hold"),
    "ReplicationConfigurationNotFoundError": (404, "The replication configuration was not "
                                                   "found"),
    "RequestHeaderSectionTooLarge": (400, "Your request header section exceeds the maximum "
                                          "allowed size."),
    "RequestTimeout": (400, "Your socket connection to the server was not read from or "
                            "written to within the timeout period."),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current "
                                  "time is too large."),
    "ServerSideEncryptionConfigurationNotFoundError": (404, "The server side encryption "
                                                            "configuration was not found"),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the "
                                   "signature you provided. Check your key and signing "
                                   "method."),
    "SlowDown": (503, "Please reduce your request rate."),
    # Not an AWS code (S3 has no full disks): 507 as in RFC 4918 §11.5, which SDKs do not
    # retry, since retrying will not help until objects are deleted. MinIO's equivalent is
    # XMinioStorageFull.
    "StorageFull": (507, "The storage is full: it keeps its last free space for deletes. "
                         "Delete objects to make room."),
    "TooManyBuckets": (400, "You have attempted to create more buckets than allowed."),
    "UnexpectedContent": (400, "This request does not support content."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not "
                                       "match what was computed."),
}


class S3Error(Exception):
    """An S3 error response.

    ``code``: an AWS error code from :data:`CODES` (unknown codes answer 400). ``message``:
    overrides the default wording. ``status``: overrides the table's HTTP status. ``headers``:
    extra response headers (lower-case name -> value). ``details``: extra ``<Name>value</Name>``
    elements of the XML body (e.g. ``BucketName``, ``Key``, ``ArgumentName``).
    """

    def __init__(self, code: str, message: str | None = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None, **details: str):
        default_status, default_message = CODES.get(code, (400, code))
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.headers = headers or {}
        self.details = {k: str(v) for k, v in details.items()}
        super().__init__(f"{code}: {self.message}")


def invalid_argument(message: str, name: str, value: object) -> S3Error:
    """InvalidArgument with AWS's ArgumentName/ArgumentValue details."""
    return S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=str(value))
