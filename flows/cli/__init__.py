"""The `instructue` command line.

    instructue datasets                               # the readers and their options
    instructue ingest movielens-100k                  # read, validate, publish data/, version with DVC
    instructue ingest synthetic-multisource -o n_users=10000 -o noise=0.3
    instructue ingest parquet -o path=/some/folder
    instructue synthesize movielens-100k              # UserQA records for the training users
    instructue train --profile quick --dataset movielens-100k
    instructue embed --dataset movielens-100k --model runs/movielens-100k-quick/model
    instructue evaluate --model runs/movielens-100k-quick/model --dataset movielens-100k
    instructue data push | pull | status | remote URL

One module per concern: `data.py` (datasets, ingest, synthesize), `data_versions.py` (`instructue
data ...`), `train.py` (train, merge), `evaluate.py` (evaluate, embed), `registry.py` (register,
promote, rollback, embed-batch, serve), `pipeline.py` (retrain, deploy), `team.py` (team-server,
users); `common.py` holds the app.
Each command parses its options and calls components or a flow; the work is theirs.

User errors (bad input, bad options, a dataset that breaks the contract) print one message and exit
with status 2; a traceback means a bug.
"""

from __future__ import annotations

import sys

from flows.cli import data, evaluate, pipeline, registry, team, train  # noqa: F401 - registers the commands
from flows.cli.common import app, fail, parse_pairs, run_flow, user_errors
from flows.cli.data_versions import data_app

app.add_typer(data_app, name="data", help="Push, pull and inspect DVC versions of data/.")
app.add_typer(team.users_app, name="users")

__all__ = ["app", "fail", "parse_pairs", "run_flow", "user_errors"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
