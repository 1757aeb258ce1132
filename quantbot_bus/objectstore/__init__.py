"""Runs in S3-compatible object storage: the ``s3://BUCKET/PREFIX`` root and its clients
(``location``), finding finished runs by listing (``listing``), checking one with small ranged
reads (``validate``) and uploading one (``upload``). The same run contract as on a local disk
(docs/contract.md). Import from the modules: importing this package loads none of them (the
configuration imports ``location`` on every command)."""
