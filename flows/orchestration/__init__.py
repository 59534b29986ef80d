"""Prefect plumbing the hybridops.flows share: events, locks, deployments, serving, warm start, run control, Dask."""
