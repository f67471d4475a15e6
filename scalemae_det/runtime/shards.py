"""Which scenes a shard of a many-machine job runs: `K/N`, or `auto` from the scheduler's
environment.

The split is by a stable hash of each scene's file name, shard = sha256(name) mod N (+1):
- the file name, not the resolved path: the output is named after the scene (OUT/<stem>.<format>),
  so the name is already the scene's identity in a job, and `predict` refuses two scenes that would
  share an output; the resolved path differs between a Slurm node's mount and a pod's (/scratch/...
  vs /data/...) and between relative and absolute arguments, which must not move a scene;
- sha256, not Python's `hash()`, which is salted per process (PYTHONHASHSEED);
- each scene's shard depends on that scene alone, not on its rank in the list: shards that list a
  folder at different moments (a scene added meanwhile) or in a different order still agree on
  every scene they both see. The price is balance: shard sizes are binomial (thousands of scenes
  over tens of shards come out within a few percent of even; 7 scenes over 3 may leave one empty).

`auto` reads the index the scheduler gives each task:
- Slurm job arrays set SLURM_ARRAY_TASK_ID, _MIN, _MAX, _STEP and _COUNT (sbatch(1), "OUTPUT
  ENVIRONMENT VARIABLES"; https://slurm.schedmd.com/job_array.html): `--array=0-9`, `1-10` and
  `0-18:2` all give K = (ID - MIN) / STEP + 1 of N = COUNT; an uneven list (`--array=1,4,9`) has no
  such K and is refused rather than guessed.
- Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX (0-based; https://kubernetes.io/docs/tasks/job/
  indexed-parallel-processing-static). The job's `completions` reaches the pod in no variable, so N
  comes from `--shard-count`, or from SCALEMAE_DET_SHARD_COUNT where a manifest prefers an env
  entry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from scalemae_det.base.errors import ParameterError

COUNT_ENV = "SCALEMAE_DET_SHARD_COUNT"
P = TypeVar("P", str, os.PathLike)


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int
    source: str = "given"  # given | slurm | kubernetes

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def takes(self, scene: str | os.PathLike) -> bool:
        return shard_of(scene, self.count) == self.index


ALL = Shard(1, 1)


def shard_of(scene, count: int) -> int:
    """The 1-based shard of `count` that runs `scene`, a path or a runtime.inputs.Source, by its
    name (the file name; see the module docstring)."""
    name = scene.name if hasattr(scene, "name") else Path(scene).name
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select(scenes: Sequence[P], shard: Shard) -> list[P]:
    """This shard's scenes, in the order given."""
    return [s for s in scenes if shard.takes(s)]


def _int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ParameterError(
            "shard", f"{name}={text!r} is not a whole number", value="auto"
        ) from None


def _checked(index: int, count: int, value: str, where: str = "") -> Shard:
    if count < 1:
        raise ParameterError(
            "shard", f"{where}the shard count must be at least 1, got {count}", value=value
        )
    if not 1 <= index <= count:
        raise ParameterError("shard", f"{where}shard {index} is outside 1..{count}", value=value)
    return Shard(index, count)


def _slurm(env: Mapping[str, str], count: int | None) -> Shard:
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    total = _int(env, "SLURM_ARRAY_TASK_COUNT")
    low = _int(env, "SLURM_ARRAY_TASK_MIN")
    high = _int(env, "SLURM_ARRAY_TASK_MAX")
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    if total is None or low is None:
        raise ParameterError(
            "shard",
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT or _MIN is not; "
            "give `shard` K/N",
            value="auto",
        )
    if (task - low) % step or (high is not None and (high - low) // step + 1 != total):
        raise ParameterError(
            "shard",
            f"the Slurm array's task ids are not evenly spaced (MIN {low}, MAX {high}, "
            f"STEP {step}, COUNT {total}); submit sbatch --array=A-B[:S] or give `shard` K/N",
            value="auto",
        )
    if count is not None and count != total:
        raise ParameterError(
            "shard_count", f"disagrees with the Slurm array's {total} tasks", value=count
        )
    shard = _checked((task - low) // step + 1, total, "auto", f"SLURM_ARRAY_TASK_ID={task}: ")
    return Shard(shard.index, shard.count, "slurm")


def _kubernetes(env: Mapping[str, str], count: int | None) -> Shard:
    index = _int(env, "JOB_COMPLETION_INDEX")
    from_env = _int(env, COUNT_ENV)
    if count is None:
        count = from_env
    elif from_env is not None and from_env != count:
        raise ParameterError("shard_count", f"disagrees with {COUNT_ENV}={from_env}", value=count)
    if count is None:
        raise ParameterError(
            "shard",
            "JOB_COMPLETION_INDEX is set but not the job's completions; "
            f"give `shard_count` N (or {COUNT_ENV}) equal to the Job's spec.completions",
            value="auto",
        )
    shard = _checked(index + 1, count, "auto", f"JOB_COMPLETION_INDEX={index}: ")
    return Shard(shard.index, shard.count, "kubernetes")


def parse_shard(
    text: str | None, count: int | None = None, env: Mapping[str, str] | None = None
) -> Shard:
    """`K/N` (1-based), `auto` (from Slurm or Kubernetes, see above) or None (the whole job:
    1/1)."""
    env = os.environ if env is None else env
    if text is None:
        if count is not None:
            raise ParameterError("shard_count", "needs `shard` auto", value=count)
        return ALL
    if text == "auto":
        if env.get("SLURM_ARRAY_TASK_ID"):
            return _slurm(env, count)
        if env.get("JOB_COMPLETION_INDEX"):
            return _kubernetes(env, count)
        raise ParameterError(
            "shard",
            "neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX "
            "(a Kubernetes Indexed Job) is set; give `shard` K/N",
            value="auto",
        )
    if count is not None:
        raise ParameterError(
            "shard_count", "goes with `shard` auto; with `shard` K/N the count is N", value=count
        )
    k, slash, n = text.partition("/")
    try:
        index, total = int(k), int(n)
    except ValueError:
        raise ParameterError("shard", "expected K/N (e.g. 2/8) or auto", value=text) from None
    if not slash:
        raise ParameterError("shard", "expected K/N (e.g. 2/8) or auto", value=text)
    return _checked(index, total, text)
