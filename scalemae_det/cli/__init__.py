"""The `scalemae-det` command: one module per subcommand, over library functions that know no flags.

Like rasterio's `rio` (rasterio/rio/, one module per command), each module here turns flags into
arguments of a library call and nothing more; the libraries raise `UserError` naming the file or
the parameter. Heavy imports (torch, onnxruntime) stay inside the commands, so `--help` and the
torch-free `predict` start fast.

Every problem a user can cause ends as one `error: ...` line on stderr and a non-zero exit: a
`UserError` from a library (exit 1) and the usage errors of click (which typer vendors), such as a
missing option or a value of the wrong type (exit 2, click's code for usage errors), which click
would otherwise draw as a framed panel.
"""

from __future__ import annotations

import signal
import sys
import warnings
from contextlib import contextmanager

import typer

from scalemae_det.base.errors import InputWarning, Spelling, UserError, dashed_flag
from scalemae_det.cli.demo import demo_command
from scalemae_det.cli.evaluate import evaluate_command
from scalemae_det.cli.export import export_command
from scalemae_det.cli.merge import merge_command
from scalemae_det.cli.options import respell
from scalemae_det.cli.predict import predict_command
from scalemae_det.cli.prepare import prepare_command
from scalemae_det.cli.prepare_xview import prepare_xview_command
from scalemae_det.cli.score import score_command
from scalemae_det.cli.status import status_command
from scalemae_det.cli.synth import synth_chips, synth_scene

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ScaleMAE detection for satellite imagery.",
)
app.command("demo")(demo_command)
app.command("synth-scene")(synth_scene)
app.command("synth-chips")(synth_chips)
app.command("prepare")(prepare_command)
app.command("prepare-xview")(prepare_xview_command)
app.command("evaluate")(evaluate_command)
app.command("score")(score_command)
app.command("export")(export_command)
app.command("predict")(predict_command)
app.command("status")(status_command)
app.command("merge")(merge_command)

USAGE_ERROR = 2  # click's exit status for usage errors


INTERRUPTED = 130  # the shell's status for a process ended by SIGINT
TERMINATED = 143  # ... and by SIGTERM


@contextmanager
def _sigterm_unwinds():
    """SIGTERM (`kill`, a job scheduler, torchrun stopping its workers) ends the process the way
    Ctrl-C does,
    through every `finally`, so temporary files and work folders are removed instead of left
    behind."""

    def stop(signum, frame):
        raise SystemExit(TERMINATED)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _warnings_as_lines(spell: Spelling):
    """An `InputWarning` is one `warning: ...` line on stderr, its parameters spelled as flags;
    other warnings are shown as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if isinstance(message, InputWarning):
            print(f"warning: {message.render(spell)}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = show
        yield


def report_user_errors(entry, *args, spell: Spelling = dashed_flag) -> None:
    """Run `entry`; a UserError becomes one `error: ...` line on stderr and exit status 1,
    parameters spelled as
    this command's flags by `spell` (train.py uses it too, with its own spelling); Ctrl-C one line
    and 130."""
    try:
        with _sigterm_unwinds(), _warnings_as_lines(spell):
            entry(*args)
    except UserError as exc:
        print(f"error: {exc.render(spell)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED)


def _run_app() -> None:
    try:
        status = app(args=respell(sys.argv[1:]), standalone_mode=False)
    except (
        typer.TyperException
    ) as exc:  # click's usage errors, as typer (which vendors click) raises them
        ctx = getattr(exc, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {exc.format_message()}{where}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", USAGE_ERROR))
    except typer.Abort:  # end of input at a prompt
        sys.exit(1)
    if (
        status == INTERRUPTED
    ):  # typer's answer to Ctrl-C in a command, after every `finally` has run
        print("error: interrupted", file=sys.stderr)
    sys.exit(status if isinstance(status, int) else 0)


def main() -> None:
    report_user_errors(_run_app)


if __name__ == "__main__":
    main()
