"""`python -m scalemae_det.cli`: the `scalemae-det` command, for environments without its script."""

from scalemae_det.cli import main

main()
