"""Units of work for hybridops: plain functions, usable and testable without a Prefect server."""
