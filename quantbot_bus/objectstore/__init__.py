"""Runs in S3-compatible object storage: the ``s3://BUCKET/PREFIX`` root (``location``), finding
finished runs by listing (``listing``), checking one with small ranged reads (``validate``) and
uploading one (``upload``). The same run contract as on a local disk (docs/contract.md)."""

from .listing import BadKey, Lister, RunObject
from .location import S3Location, S3Settings, is_s3_url
from .upload import upload_run
from .validate import ObjectRun, validate_object_run

__all__ = [
    "BadKey",
    "Lister",
    "ObjectRun",
    "RunObject",
    "S3Location",
    "S3Settings",
    "is_s3_url",
    "upload_run",
    "validate_object_run",
]
