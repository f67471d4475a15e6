"""One exception for every problem the user can fix (bad file, bad option).

The CLI prints it as a single line and exits 1; anything else is a bug and keeps its traceback.
Messages name the file and the problem: "scene.tif: reading failed at window (0, 800)".
"""


class UserError(Exception):
    pass
