"""Prefect flows, deployments and the `instructue` command line; each task calls one component function."""
