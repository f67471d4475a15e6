"""The ONNX Runtime session: provider choice, the model contract check, batched runs.

onnxruntime-gpu falls back to the CPU without a word when CUDA or TensorRT libraries are missing,
so the providers the session really got are reported (`providers`, `note`), and an explicit
`cuda`/`tensorrt` request that cannot be met is an error rather than a slow CPU run.

An int8 model (QDQ graph, `precision: int8` in its metadata) runs on TensorRT with
`trt_int8_enable`: TensorRT then takes the graph's QuantizeLinear/DequantizeLinear nodes as its
quantization (explicit quantization). No calibration table is passed for such a graph: onnxruntime's
TensorRT EP documentation says a table must not be given with Q/DQ nodes, which TensorRT refuses.
Layers the export left in float32 stay float32 on TensorRT too (fp16 is not switched on with int8).
The metadata is read from the file before the session is made (`read_props`): the TensorRT options
have to be known when the engine is built.

TensorRT's engine cache (trt_engine_cache_path, ONNX Runtime's TensorRT EP options) is a folder
under XDG_CACHE_HOME or ~/.cache. It is made only when TensorRT is in the provider chain, and
removed again when ONNX Runtime then could not use TensorRT (no libnvinfer, no GPU), so no run
leaves it for nothing. A home that cannot be written (read-only edge boxes) is TensorRT's problem
alone: `auto` goes on without TensorRT and says why; `--provider tensorrt` is refused naming the
folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError, MissingPathError, ParameterError
from scalemae_det.base.metadata import (
    INPUT_NAME,
    OUTPUT_NAMES,
    THRESHOLD_INITIALIZER,
    MetadataError,
    ModelMetadata,
    read_props,
)
from scalemae_det.base.pixels import FILL
from scalemae_det.runtime.detections import Detections, unpad

NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CHOICES = ("auto", *NAMES)


def trt_cache_dir() -> Path:
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "scalemae-det"
        / "tensorrt"
    )


def _make_dirs(path: Path) -> list[Path]:
    """`mkdir -p path`, returning the folders it created (outermost first) so they can be taken
    back."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    missing.reverse()
    for folder in missing:
        folder.mkdir()
    return missing


def _remove_dirs(created: list[Path]) -> None:
    for folder in reversed(created):
        with contextlib.suppress(OSError):  # not empty after all: leave it
            folder.rmdir()


def provider_options(
    name: str, precision: str = "float32", exact: bool = False, trt_cache: Path | None = None
) -> dict:
    """onnxruntime options for provider `name` running a model of `precision`."""
    if name == NAMES["cuda"]:
        # tile shapes are fixed: no exhaustive search; `exact` (parity checks) keeps float32 matmuls
        # off TF32
        return {"cudnn_conv_algo_search": "HEURISTIC", **({"use_tf32": 0} if exact else {})}
    if name == NAMES["tensorrt"]:
        options = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(trt_cache or trt_cache_dir()),
        }
        if precision == "int8":
            options["trt_int8_enable"] = True  # explicit quantization from the graph's Q/DQ nodes
        return options
    return {}


def _precision(path: str) -> str:
    """The precision a model's metadata states, "float32" when it cannot be read here (the session
    reports the problem properly once made)."""
    try:
        return json.loads(read_props(path).get("precision", '"float32"'))
    except (MetadataError, json.JSONDecodeError, OSError):
        return "float32"


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    """Collect what onnxruntime prints (C++ log on fd 2, Python fallback notices on stdout)
    while it tries providers, so a failed GPU load becomes one line of ours instead of a
    screenful."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp, contextlib.redirect_stdout(io.StringIO()) as out:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().splitlines() + out.getvalue().splitlines())


def _reason(lines: list[str]) -> str:
    """The most telling line of onnxruntime's complaint about a provider."""
    for pattern in (
        r"with error: (.*)",
        r"(Failed to create \w+)",
        r"EP Error:? (.*?)(?: when using| using|$)",
    ):
        for line in lines:
            found = re.search(pattern, line)
            if found:
                return re.sub(r"\x1b\[[0-9;]*m", "", found.group(1)).strip()
    return "onnxruntime could not load it"


class Session:
    """An onnxruntime.InferenceSession on a scalemae-det model, checked against the contract.

    `exact=True` is for checking a model rather than running it (the export's parity check): CUDA
    without TF32, and `auto` does not try TensorRT, whose engine build may pick reduced-precision
    kernels and takes minutes for a large model. `score_threshold` overrides the threshold the graph
    was exported with (the parity check's probe below it); predict applies its own on top instead.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        provider: str = "auto",
        batch: int | None = None,
        threads: int | None = None,
        *,
        exact: bool = False,
        score_threshold: float | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError(
                "onnxruntime is not installed: pip install 'scalemae-det[runtime]'"
            ) from None

        self.path = str(model_path)
        checks.choice("provider", provider, CHOICES)
        if not Path(self.path).is_file():
            raise MissingPathError(f"{self.path}: model file not found")
        available = ort.get_available_providers()
        gpu = ("cuda",) if exact and provider == "auto" else ("tensorrt", "cuda")
        wanted = [NAMES[p] for p in gpu if provider in ("auto", p) and NAMES[p] in available]
        if provider in ("cuda", "tensorrt") and not wanted:
            raise ParameterError(
                "provider",
                f"this onnxruntime has no {NAMES[provider]}; install onnxruntime-gpu "
                "or use `provider` cpu",
                value=provider,
                source=self.path,
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        # onnxruntime keeps no reference to an added initializer (nor the OrtValue to its numpy
        # array):
        # both must live as long as the session, or the session reads freed memory
        self._initializers = []
        if score_threshold is not None:
            array = np.array(score_threshold, np.float32)
            self._initializers = [array, ort.OrtValue.ortvalue_from_numpy(array)]
            options.add_initializer(THRESHOLD_INITIALIZER, self._initializers[1])
        trt_cache, created, notes = None, [], []
        if NAMES["tensorrt"] in wanted:
            trt_cache = trt_cache_dir()
            try:
                created = _make_dirs(trt_cache)
            except OSError as exc:
                problem = (
                    f"cannot create its engine cache {trt_cache} ({exc.strerror}); "
                    "set XDG_CACHE_HOME to a writable folder"
                )
                if provider == "tensorrt":
                    raise ParameterError(
                        "provider", problem, value=provider, source=self.path
                    ) from None
                wanted.remove(NAMES["tensorrt"])
                notes.append(f"{NAMES['tensorrt']} not usable: {problem}")
        chain = [*wanted, NAMES["cpu"]]
        precision = _precision(self.path) if NAMES["tensorrt"] in wanted else "float32"
        try:
            with _captured() as log:
                self.session = ort.InferenceSession(
                    self.path,
                    options,
                    providers=chain,
                    provider_options=[
                        provider_options(p, precision, exact, trt_cache) for p in chain
                    ],
                )
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            _remove_dirs(created)
            raise InputError(
                f"{self.path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})"
            ) from None
        self.providers = self.session.get_providers()
        if NAMES["tensorrt"] not in self.providers:
            _remove_dirs(created)  # TensorRT is not used: no cache folder made for nothing
        missing = [p for p in wanted if p not in self.providers]
        if missing:
            notes.append(f"{', '.join(missing)} not usable: {_reason(log)}")
        self.note = "; ".join(notes)
        if provider != "auto" and NAMES[provider] not in self.providers:
            raise ParameterError(
                "provider",
                f"requested but {self.note}; use `provider` cpu, or install the "
                "CUDA/cuDNN (and TensorRT) libraries onnxruntime-gpu needs",
                value=provider,
                source=self.path,
            )
        self.metadata = ModelMetadata.from_props(
            self.session.get_modelmeta().custom_metadata_map, self.path
        )
        self.batch = self._check_io(batch)
        self.run_seconds = 0.0  # time spent inside session.run, for the benchmarks

    @property
    def provider(self) -> str:
        return self.providers[0]

    def _check_io(self, batch: int | None) -> int:
        """The batch to run: the graph's own when it is fixed, else `batch` or the metadata's."""
        inputs = self.session.get_inputs()
        outputs = {o.name for o in self.session.get_outputs()}
        t = self.metadata.tile
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or not set(OUTPUT_NAMES) <= outputs:
            raise InputError(
                f"{self.path}: graph inputs/outputs do not follow the scalemae-det contract "
                f"(want {INPUT_NAME} -> {', '.join(OUTPUT_NAMES)})"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != [t, t]:
            raise InputError(
                f"{self.path}: input shape {shape} is not (B, 3, {t}, {t}) as its metadata says"
            )
        checks.number("batch", batch, lo=1, integer=True)
        fixed = self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        if fixed and batch and batch != fixed:
            raise ParameterError(
                "batch",
                f"the graph has a fixed batch of {fixed}; re-export it with batch {batch}",
                value=batch,
                source=self.path,
            )
        return fixed or batch or self.metadata.batch

    def run(self, images: np.ndarray) -> list[Detections]:
        """(N, 3, T, T) float32 in [0, 1] -> detections per image (boxes xyxy in tile pixels)."""
        return self.run_checked(images)[0]

    def run_checked(self, images: np.ndarray) -> tuple[list[Detections], bool]:
        """`run`, and whether every padded output row was zero as the contract says."""
        out, padding_zero = [], True
        for start in range(0, len(images), self.batch):
            chunk = np.ascontiguousarray(images[start : start + self.batch], np.float32)
            n = len(chunk)
            if self.fixed_batch and n < self.batch:
                chunk = np.concatenate(
                    [chunk, np.full((self.batch - n, *chunk.shape[1:]), FILL, np.float32)]
                )
            t0 = time.perf_counter()
            boxes, scores, labels, num = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk})
            self.run_seconds += time.perf_counter() - t0
            dets, zero = unpad(boxes[:n], scores[:n], labels[:n], num[:n])
            out += dets
            padding_zero &= zero
        return out, padding_zero
