"""The shared flag rules of scalemae_det/cli/options.py: old spellings rewritten with a warning."""

from scalemae_det.cli.options import DEPRECATED, respell


def test_old_spellings_become_the_new_ones_with_one_warning_each():
    said = []
    argv = ["evaluate", "--image_dir", "imgs", "--output=m.json", "--checkpoint", "c.pth"]
    assert respell(argv, said.append) == [
        "evaluate",
        "--image-dir",
        "imgs",
        "--out=m.json",
        "--checkpoint",
        "c.pth",
    ]
    assert said == [
        "warning: evaluate --image_dir is deprecated; use --image-dir",
        "warning: evaluate --output is deprecated; use --out",
    ]


def test_a_flag_is_respelled_only_for_its_own_command():
    said = []
    assert respell(["predict", "s.tif", "--to", "x"], said.append) == [
        "predict",
        "s.tif",
        "--to",
        "x",
    ]
    assert said == []
    assert all(
        new.startswith("--") and "_" not in new for t in DEPRECATED.values() for new in t.values()
    )
