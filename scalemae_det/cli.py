"""The `scalemae-det` command. Each job's module defines its command; heavy imports stay inside them."""

import sys

import typer

from scalemae_det.export.cli import export_command
from scalemae_det.runtime.cli import predict
from scalemae_det.data.xview import prepare_xview_command
from scalemae_det.demo import demo_command
from scalemae_det.engine.evaluate import evaluate_command
from scalemae_det.base.errors import UserError
from scalemae_det.synthetic.commands import synth_chips, synth_scene

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ScaleMAE detection for satellite imagery.")
app.command("demo")(demo_command)
app.command("synth-scene")(synth_scene)
app.command("synth-chips")(synth_chips)
app.command("prepare-xview")(prepare_xview_command)
app.command("evaluate")(evaluate_command)
app.command("export")(export_command)
app.command("predict")(predict)


def report_user_errors(entry, *args) -> None:
    """Run `entry`; a UserError becomes one `error: ...` line on stderr and exit status 1 (train.py uses it too)."""
    try:
        entry(*args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    report_user_errors(app)


if __name__ == "__main__":
    main()
