"""Prefect flows, deployments and the `instructue` command line; each task calls one component function.

Importing the package turns analytics off (`settings.quiet_telemetry`, values already set are kept):
a benchmark or a notebook that calls a flow directly starts Prefect's ephemeral server too, and that
server's telemetry service would otherwise try to reach the internet (seen in an ablation run).
"""

from flows.settings import quiet_telemetry

quiet_telemetry()
