"""Prefect flows, deployments and the `instructue` command line; each task calls one component function.

Importing the package turns analytics off (`settings.quiet_telemetry`, values already set are kept):
a benchmark or a notebook that calls a flow directly starts Prefect's ephemeral server too, and that
server's telemetry service would otherwise try to reach the internet (seen in an ablation run).
It also gives that server 120 s to start instead of Prefect's 20 (`settings.patient_server_start`):
on a busy 2-core machine the start took longer and a CLI call failed (seen in CI).
"""

from flows.settings import patient_server_start, quiet_telemetry

quiet_telemetry()
patient_server_start()
