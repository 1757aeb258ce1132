"""The Iceberg backend: runs registered into Apache Iceberg tables on a shared SQL catalog
(PostgreSQL), exactly once however many daemons commit. ``tables`` (the catalog, schemas and
table creation), ``commit`` (exactly-once appends), ``register`` (a batch into every table),
``ledger`` (the daemon's local record of what the tables hold), ``maintenance`` (snapshot
expiry and orphan cleanup)."""
