"""`scalemae-det status OUT`: the state of a (sharded) predict job, from every shard's run
records."""

from __future__ import annotations

from pathlib import Path

import typer

NOT_FINISHED = 3  # exit status while scenes are failed or left, so a script can wait on it


def status_command(
    out: Path = typer.Argument(..., help="the --out folder of the predict job"),
) -> None:
    """Scenes done, failed (with their reasons) and left, over every shard that wrote into OUT."""
    from scalemae_det.runtime.records import job_state

    state = job_state(out)
    for line in state.lines():
        print(line)
    if state.failed or state.left:
        raise typer.Exit(NOT_FINISHED)
