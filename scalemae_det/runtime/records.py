"""Run records: what every shard of a job did, scene by scene, and the job's state read back from
them.

Each run of `predict` (each attempt of each shard) appends to a file of its own,
OUT/records/shard-K-of-N.<host>.<pid>.<start>.jsonl, created exclusively (O_EXCL): concurrent shards
on a shared filesystem never write the same file, so no locking is needed, and appends from two NFS
clients (whose O_APPEND is not atomic, open(2)) never interleave. A rerun of a killed shard starts a
new file and leaves the old one as its history.

One JSON object a line, each written with one write(2) and fsynced, so a killed run loses at most
the line it was writing; readers skip a line that does not parse:
- `start`: the shard, its scenes (file names), the whole job's scene count and a key of its scene
  list, the model (path, or a list of an ensemble's paths; SHA-256; class names), provider, host
  and pid;
- `scene`: scene, output (its name in OUT, which may be mounted elsewhere on the machine that reads
  the records), status ok / failed / skipped, detections, tiles, seconds, provider, model
  hash, a one-line reason for failures, and for `ok` the scene's footprint (CRS, transform, size)
  that `merge` needs without opening the raster;
- `end`: the counts; an attempt without one is still running, or was killed.

The state of a scene is its latest record (by time): ok or skipped (its output was there) is done,
failed is failed with its reason; a scene of the job with no record is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError, MissingPathError, PathError
from scalemae_det.runtime.shards import Shard

FOLDER = "records"
STATUSES = ("ok", "failed", "skipped")


def job_key(names: Iterable[str]) -> str:
    """A short key of a job's scene list: shards given the same scenes (in any order) share it."""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()[:16]


def footprint(scene) -> dict | None:
    """What merge needs of a runtime Scene: CRS, transform and size; None without georeference."""
    if not scene.georeferenced:
        return None
    return {
        "crs": scene.crs.to_string(),
        "transform": list(scene.transform)[:6],
        "width": scene.width,
        "height": scene.height,
    }


class RunRecord:
    """The record of one attempt of one shard; `scene()` once per scene, then `close()`."""

    def __init__(
        self,
        out: str | os.PathLike,
        shard: Shard,
        job_scenes: list[str],
        shard_scenes: list[str],
        model: str | os.PathLike | list,
        model_sha256: str,
        class_names: list[str],
        provider: str,
        fmt: str,
    ):
        folder = Path(out) / FOLDER
        host = (
            "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname()) or "host"
        )
        started = time.time()
        shard_part = f"shard-{shard.index:05d}-of-{shard.count:05d}"
        stem = f"{shard_part}.{host}.{os.getpid()}.{int(started * 1000)}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / f"{stem}.jsonl"
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise checks.write_failed(folder, exc, "cannot write the run record") from None
        self.model_sha256, self.provider = model_sha256, provider
        self.counts = dict.fromkeys(STATUSES, 0)
        self._write(
            {
                "kind": "start",
                "time": started,
                "shard": str(shard),
                "shard_source": shard.source,
                "job_scenes": len(job_scenes),
                "job_key": job_key(job_scenes),
                "scenes": shard_scenes,
                "model": [str(m) for m in model] if isinstance(model, list) else str(model),
                "model_sha256": model_sha256,
                "class_names": class_names,
                "provider": provider,
                "format": fmt,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    def _write(self, entry: dict) -> None:
        os.write(self._fd, (json.dumps(entry) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def scene(
        self,
        scene: str | os.PathLike,
        output: str | os.PathLike,
        status: str,
        *,
        detections: int = 0,
        tiles: int = 0,
        seconds: float = 0.0,
        provider: str | None = None,
        reason: str | None = None,
        footprint: dict | None = None,
        tiles_outside: int | None = None,
    ) -> None:
        """One scene's line. `scene` is a path or a runtime.inputs.Source (its name, and its path
        as `str()` shows it: a URL without credentials); `tiles_outside` counts the tiles not read
        because they lie outside the area of interest (given only with one)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.counts[status] += 1
        entry = {
            "kind": "scene",
            "time": time.time(),
            "scene": scene.name if hasattr(scene, "name") else Path(scene).name,
            "path": str(scene),
            "output": Path(output).name,
            "status": status,
            "detections": detections,
            "tiles": tiles,
            "seconds": round(seconds, 3),
            "provider": provider or self.provider,
            "model_sha256": self.model_sha256,
        }
        if reason:
            entry["reason"] = reason
        if tiles_outside is not None:
            entry["tiles_outside_area"] = tiles_outside
        if footprint:
            entry["footprint"] = footprint
        self._write(entry)

    def close(self) -> None:
        if self._fd is not None:
            self._write({"kind": "end", "time": time.time(), **self.counts})
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None or issubclass(
            exc[0], Exception
        ):  # not on KeyboardInterrupt: no end, as if killed
            self.close()
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Attempt:
    path: Path
    start: dict
    scenes: list[dict] = field(default_factory=list)
    ended: bool = False


def read_attempts(out: str | os.PathLike) -> list[Attempt]:
    """Every record file under OUT/records, oldest first; lines that do not parse are skipped."""
    folder = Path(out) / FOLDER
    if not Path(out).is_dir():
        raise MissingPathError(f"{out}: no such directory")
    attempts = []
    for path in sorted(folder.glob("shard-*.jsonl")) if folder.is_dir() else []:
        attempt = None
        for line in _lines(path):
            kind = line.get("kind")
            if kind == "start":
                attempt = Attempt(path, line)
            elif attempt is not None and kind == "scene":
                attempt.scenes.append(line)
            elif attempt is not None and kind == "end":
                attempt.ended = True
        if attempt is not None:
            attempts.append(attempt)
    if not attempts:
        raise InputError(
            f"{out}: no run records in {folder} (predict writes them in its output folder)"
        )
    return sorted(attempts, key=lambda a: a.start.get("time", 0))


def _lines(path: Path) -> Iterator[dict]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PathError(f"{path}: cannot read ({exc.strerror})") from None
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue  # the line a killed run was writing
        if isinstance(entry, dict):
            yield entry


@dataclass
class JobState:
    total: int  # scenes in the job, as the shards counted them
    shards: int  # N of the K/N shards
    done: dict[str, dict]  # scene -> its latest ok or skipped record
    failed: dict[str, dict]  # scene -> its latest record, a failure
    left: int
    unstarted: list[int]  # shards with no record at all
    open_attempts: list[Attempt]  # a shard's latest attempt has no end line: running, or killed
    notes: list[str]  # mixed jobs, mixed models
    latest_ok: dict[
        str, tuple[dict, dict]
    ]  # scene -> (its latest ok record, that attempt's start line)

    def lines(self) -> list[str]:
        out = [
            f"{self.total} scenes in {self.shards} shard{'s' * (self.shards > 1)}: "
            f"{len(self.done)} done, "
            f"{len(self.failed)} failed, {self.left} left"
        ]
        out += [
            f"failed: {name}: {rec.get('reason', 'no reason recorded')}"
            for name, rec in sorted(self.failed.items())
        ]
        if self.unstarted:
            out.append(
                f"shards never started: {', '.join(f'{k}/{self.shards}' for k in self.unstarted)}"
            )
        for a in self.open_attempts:
            out.append(
                f"unfinished (running, or killed): shard {a.start.get('shard')} on "
                f"{a.start.get('host')} "
                f"pid {a.start.get('pid')}, {len(a.scenes)} scenes recorded ({a.path.name})"
            )
        return out + [f"note: {n}" for n in self.notes]


def job_state(out: str | os.PathLike) -> JobState:
    """The whole job's state from every shard's records in OUT."""
    attempts = read_attempts(out)
    notes = []
    keys = {(a.start.get("job_key"), a.start.get("shard", "1/1").split("/")[1]) for a in attempts}
    if len(keys) > 1:
        notes.append(
            f"the records come from {len(keys)} different jobs (scene lists or shard counts "
            "differ); "
            "counts mix them"
        )
    newest = attempts[-1].start
    total, shards = int(newest.get("job_scenes", 0)), int(newest.get("shard", "1/1").split("/")[1])
    latest: dict[str, dict] = {}
    latest_ok: dict[str, tuple[dict, dict]] = {}
    planned: set[str] = set()
    started: set[int] = set()
    for a in attempts:
        planned.update(a.start.get("scenes", []))
        started.add(int(a.start.get("shard", "1/1").split("/")[0]))
        for rec in a.scenes:
            name = rec.get("scene")
            if rec.get("time", 0) >= latest.get(name, {}).get("time", -1):
                latest[name] = rec
            if (
                rec.get("status") == "ok"
                and rec.get("time", 0) >= latest_ok.get(name, ({"time": -1},))[0]["time"]
            ):
                latest_ok[name] = (rec, a.start)
    done = {n: r for n, r in latest.items() if r.get("status") in ("ok", "skipped")}
    failed = {n: r for n, r in latest.items() if r.get("status") == "failed"}
    total = max(total, len(planned | set(latest)))
    models = {r.get("model_sha256") for r in done.values()}
    if len(models) > 1:
        notes.append(f"the done scenes come from {len(models)} different model files")
    last = {a.start.get("shard"): a for a in attempts}  # a killed attempt rerun since is history
    return JobState(
        total,
        shards,
        done,
        failed,
        total - len(done) - len(failed),
        [k for k in range(1, shards + 1) if k not in started],
        [a for a in last.values() if not a.ended],
        notes,
        latest_ok,
    )
