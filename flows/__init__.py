"""Prefect flows, deployments and the `instructue` command line; each task calls one component function.

Importing the package sets the environment's defaults (`settings.apply_environment_defaults`, values
already set are kept): a benchmark or a notebook that calls a flow directly starts Prefect's
ephemeral server too, and that server's telemetry service would otherwise try to reach the internet
(seen in an ablation run), and would give up after 20 s of a slow start (seen in CI).
"""

from flows.settings import apply_environment_defaults

apply_environment_defaults()
