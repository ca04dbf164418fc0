"""Process set-up and file I/O shared by every step: one BLAS thread, devices, atomic writes."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

# Small-network jobs on a 2-core machine run ~9x slower with 2 BLAS threads than with 1;
# Snakemake runs jobs side by side instead. Set before torch/numpy spin up their pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ERROR_KEY = "__error__"
# Training is cached between workflows, and Snakemake allows no benchmark file on a cached
# rule, so the train step records its own wall time inside its output under this key.
TRAIN_SECONDS_KEY = "__train_seconds__"


class _DeferredTorch(types.ModuleType):
    """Stands in for torch in sys.modules until a claim first touches it.

    Claim modules import torch at the top, but many steps (generate, theory, measure,
    verdict) never call it, and importing torch is most of a short job's 2-3 s start-up.
    The first attribute looked up loads the real torch (pinned to one thread) and forwards.
    """

    def __getattr__(self, name: str):
        return getattr(load_torch(), name)


def load_torch():
    """The real torch now (one thread), in place of the stand-in of defer_torch()."""
    stand_in = sys.modules.get("torch")
    if isinstance(stand_in, _DeferredTorch):
        del sys.modules["torch"]
    import torch

    single_thread()
    # Rebind the stand-in in the replica modules that imported it, so a later training loop
    # in the same process (run_chain) looks torch up directly, not through __getattr__.
    if isinstance(stand_in, _DeferredTorch):
        for name, module in list(sys.modules.items()):
            if name.startswith("replica") and module is not None:
                for key, value in list(vars(module).items()):
                    if value is stand_in:
                        setattr(module, key, torch)
    return torch


def defer_torch() -> None:
    """Import torch only when first used (a no-op once torch is loaded)."""
    sys.modules.setdefault("torch", _DeferredTorch("torch"))


def no_grad(fn):
    """@torch.no_grad() for a module-level function, without importing torch at definition."""

    @functools.wraps(fn)
    def without_grad(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return without_grad


def torch_loaded() -> bool:
    module = sys.modules.get("torch")
    return module is not None and not isinstance(module, _DeferredTorch)


def single_thread() -> None:
    """Pin torch to one intra-op and one inter-op thread (call once per process)."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def select_device(scale: str, requested: str = "auto") -> str:
    """The one place that picks a device: cuda at paper scale when there is one, else CPU.

    A device name ("cpu" / "cuda"), which torch takes wherever it takes a device; torch is
    imported only to look for a GPU, so a claim that trains with numpy never imports it.
    """
    if requested == "cpu" or (requested == "auto" and scale != "paper"):
        return "cpu"
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device=cuda but torch sees no CUDA device")
    return "cuda" if torch.cuda.is_available() else "cpu"


# Seeds are trained as one batched model, but a batch whose activations outgrow the CPU's
# last-level cache turns every elementwise op into a trip to memory: at width 512, 64 seeds
# in one batch ran 2.4x slower than chunks of 16 (benchmarks/bench.py). Batch in chunks whose
# largest activation stays under this many bytes.
CHUNK_BYTES = 8 * 2**20


def seed_chunks(n_seeds: int, activation_elements: int, itemsize: int = 4) -> list[slice]:
    """Slices of the seed axis for batched training: as many seeds per chunk as keep one
    seed's largest activation (`activation_elements` numbers) x chunk within CHUNK_BYTES."""
    per_chunk = max(1, CHUNK_BYTES // max(1, activation_elements * itemsize))
    return [slice(lo, min(lo + per_chunk, n_seeds)) for lo in range(0, n_seeds, per_chunk)]


def seed_list(n_seeds: int, base_seed: int = 0) -> list[int]:
    return [base_seed + i for i in range(n_seeds)]


# ---------------------------------------------------------------- atomic file writes
def log_spaced_steps(last: int, count: int, *, with_zero: bool = False) -> np.ndarray:
    """Distinct integer steps log-spaced over 1..last (plus step 0 if asked), for recording.

    Feature-learning and optimisation dynamics change on a log time scale, so a log grid of
    `count` points sees every phase; rounding merges the early duplicates.
    """
    steps = np.unique(np.geomspace(1, last, count).round().astype(int))
    return np.concatenate([[0], steps]) if with_zero else steps


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    _atomic_write(Path(path), lambda h: h.write(text.encode()))


def to_jsonable(value: Any) -> Any:
    """numpy/torch scalars and arrays to plain JSON; non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, obj: Any) -> None:
    text = json.dumps(to_jsonable(obj), indent=1, sort_keys=True, allow_nan=False)
    _atomic_write(Path(path), lambda h: h.write(text.encode()))


def read_json(path) -> Any:
    return json.loads(Path(path).read_text())


def write_npz(path, arrays: dict[str, Any]) -> None:
    clean = {}
    for key, value in arrays.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        clean[key] = np.asarray(value)
    # stored, not deflated: float arrays shrink by ~20 % at ~25 MB/s, 30x slower than the write
    _atomic_write(Path(path), lambda h: np.savez(h, **clean))


def read_npz(path) -> dict[str, np.ndarray]:
    # allow_pickle=False: result files are data, never code.
    with np.load(path, allow_pickle=False) as handle:
        return {key: handle[key] for key in handle.files}


# ---------------------------------------------------------------- progress and divergence
class Progress:
    """Progress lines for a long loop, written to the job's log (stdout).

    At most ``lines`` lines per loop, each with elapsed time, an ETA and optional values,
    so a log shows where a run is without being flooded: ``tick = Progress(T, "train")``
    then ``tick(step, loss=...)`` inside the loop.
    """

    def __init__(self, total: int, label: str = "train", lines: int = 10):
        import time

        self._clock = time.perf_counter
        self.total, self.label = max(int(total), 1), label
        self.every = max(math.ceil(self.total / max(lines, 1)), 1)
        self.started = self._clock()

    def __call__(self, step: int, /, **values: float) -> None:
        done = step + 1
        if done % self.every and done != self.total:
            return
        elapsed = self._clock() - self.started
        eta = elapsed / done * (self.total - done)
        shown = " ".join(f"{k}={float(v):.4g}" for k, v in values.items())
        print(
            f"[progress] {self.label} {done}/{self.total} ({100 * done / self.total:.0f}%) "
            f"{elapsed:.1f}s elapsed, eta {eta:.1f}s {shown}".rstrip(),
            flush=True,
        )


class NonFiniteResult(RuntimeError):
    """A step produced NaN or inf: the run diverged; its verdict must say error, not plot it."""


def require_finite(arrays: dict[str, Any], what: str) -> None:
    """Raise NonFiniteResult naming every float array that holds NaN or inf.

    Claims that study divergence record it as data (a finite flag or a capped value), so any
    non-finite number reaching a result file is a failure, not a measurement.
    """
    bad = []
    for key, value in arrays.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            bad.append(f"{key} ({int((~np.isfinite(value)).sum())} of {value.size} non-finite)")
    if bad:
        raise NonFiniteResult(f"{what}: NaN/inf in {', '.join(bad)}")


# ---------------------------------------------------------------- checkpoints
class Checkpoint:
    """Snapshots of a long training loop, so a run killed at paper scale resumes where it was.

    The train step opens one per job next to its output (``<out>.ckpt.npz``, not a Snakemake
    output, so it survives the incomplete job's clean-up) and deletes it once the output is
    written. A claim's loop calls ``load()`` once, then ``save(step, state)`` whenever ``due()``
    (every ``every_s`` seconds); writes are atomic. The state must hold everything the
    rest of the loop depends on (weights, optimizer moments, RNG states as arrays) so that a
    resumed run gives the same result as an uninterrupted one.
    """

    def __init__(self, path, every_s: float = 120.0, fingerprint: str = ""):
        import time

        self._clock = time.monotonic
        self.path, self.every_s, self.fingerprint = Path(path), every_s, fingerprint
        self._last = self._clock()

    def load(self) -> dict[str, np.ndarray] | None:
        """The last snapshot, or None; a snapshot made under other settings or code is dropped."""
        if not self.path.exists():
            return None
        state = read_npz(self.path)
        made_by = str(state.pop(FINGERPRINT_KEY, ""))
        if made_by != self.fingerprint:
            print(
                f"[checkpoint] ignoring {self.path.name}: made by other settings, seeds or code "
                f"({made_by[:12] or 'no fingerprint'} != {self.fingerprint[:12]}); starting over",
                flush=True,
            )
            self.clear()
            return None
        print(f"[checkpoint] resumed from step {int(state['step'])} ({self.path.name})", flush=True)
        return state

    def due(self) -> bool:
        """Whether a snapshot is due (build the state only then: it may cost a device copy)."""
        return self._clock() - self._last >= self.every_s

    def save(self, step: int, state: dict[str, Any]) -> None:
        write_npz(self.path, {**state, "step": step, FINGERPRINT_KEY: self.fingerprint})
        self._last = self._clock()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


_CHECKPOINT: Checkpoint | None = None
FINGERPRINT_KEY = "__fingerprint__"


def fingerprint(settings: Any, sources: list[Path]) -> str:
    """sha256 over JSON settings and the bytes of the source files that produce a result."""
    import hashlib

    digest = hashlib.sha256(json.dumps(to_jsonable(settings), sort_keys=True).encode())
    for path in sorted(Path(p) for p in sources):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def checkpoint() -> Checkpoint | None:
    """The current train job's checkpoint; None outside a train step (tests, notebooks)."""
    return _CHECKPOINT


@contextlib.contextmanager
def checkpointing(out, every_s: float, fingerprint: str = ""):
    """Open the checkpoint of the train job writing `out` for the duration of the block.

    ``fingerprint`` names what produced the run (settings, point, seeds, source code): a
    snapshot is resumed only when it matches, never from a stale run.
    """
    global _CHECKPOINT
    _CHECKPOINT = Checkpoint(Path(f"{out}.ckpt.npz"), every_s, fingerprint)
    try:
        yield _CHECKPOINT
    finally:
        _CHECKPOINT = None
