"""The generic claim chain: each step loads its inputs, calls the claim module, writes atomically.

A step that fails writes an error record in place of its output (and exits 0), so the
failure travels down the chain to an ``error`` verdict and the rest of the gallery still
builds; the workflow's last rule turns any error into a non-zero exit status. Training is the
exception: its output enters Snakemake's between-workflow cache, so a failed training writes
no output, leaves its reason in ``<out>.error.json`` and fails its job; the workflow's
``onerror`` handler then builds the gallery with an error card for that claim.

    python -m replica <step> <slug> --scale S [--point P] --out PATH [inputs...]
    python -m replica run <slug> --scale smoke --results DIR     # whole chain, no Snakemake
    python -m replica check workflow/claims/<slug>.yaml          # a manifest on its own

The workflow runs three kinds of compute job per claim, each one process: `generate` (the
data, then the theory's prediction for it: both depend only on the data distribution),
`train` (one job per grid point) and `verdict` (the metrics of the trained runs, then the
verdict). Every process start-up costs a second or two (imports), so steps that are always
re-run together share one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from replica import registry, runtime
from replica.runtime import ERROR_KEY, TRAIN_SECONDS_KEY
from replica.verdicts import error_verdict, judge

# Claims that checkpoint their loop (runtime.checkpoint()) save at most this often unless a
# scale's params set checkpoint_every_s: often enough to lose little of a paper-scale run.
CHECKPOINT_EVERY_S = 120.0
# The generic driver: part of what produced a result, like the claim's own sources.
DRIVER_SOURCES = [Path(__file__), Path(runtime.__file__)]


def claim_module(slug: str):
    return importlib.import_module(f"replica.claims.{slug}")


def _upstream_error(*loaded: dict) -> str | None:
    for item in loaded:
        if ERROR_KEY in item:
            return str(item[ERROR_KEY])
    return None


def _guarded(step: str, out: Path, write_error, body) -> bool:
    """Run body(); on an exception, log the traceback and write an error record to out."""
    started = time.perf_counter()
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - any failure of claim code becomes an 'error' verdict
        traceback.print_exc()
        write_error(out, f"{step} failed: {type(exc).__name__}: {exc}")
        print(f"[replica] {step} FAILED -> {out}", flush=True)
        return False
    print(f"[replica] {step} done in {time.perf_counter() - started:.2f} s -> {out}", flush=True)
    return True


def _json_error(path: Path, message: str) -> None:
    runtime.write_json(path, {ERROR_KEY: message})


def _npz_error(path: Path, message: str) -> None:
    runtime.write_npz(path, {ERROR_KEY: message})


def _float_leaves(tree, prefix="") -> dict:
    """Flatten nested dicts/lists of metrics to {path: array} for the finiteness check.

    None is a claim's explicit "undefined" and is skipped; a float NaN is a failure.
    """
    if tree is None:
        return {}
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_float_leaves(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, (list, tuple)) and any(
        v is None or isinstance(v, (dict, list, tuple)) for v in tree
    ):
        out = {}
        for i, value in enumerate(tree):
            out.update(_float_leaves(value, f"{prefix}{i}."))
        return out
    try:
        return {prefix.rstrip("."): np.asarray(tree, dtype=float)}
    except (TypeError, ValueError):
        return {}


def _context(slug: str, scale: str, base_seed: int):
    manifest = registry.load_manifest(registry.CLAIMS_DIR / f"{slug}.yaml")
    cfg = manifest.scale(scale)
    return manifest, cfg["params"], runtime.seed_list(cfg["seeds"], base_seed)


def generate(slug, scale, out, base_seed=0):
    manifest, params, seeds = _context(slug, scale, base_seed)

    def body():
        runtime.defer_torch()
        runtime.write_npz(out, claim_module(slug).generate(params, seeds))

    return _guarded("generate", Path(out), _npz_error, body)


def theory(slug, scale, data, out, base_seed=0):
    manifest, params, seeds = _context(slug, scale, base_seed)

    def body():
        runtime.defer_torch()
        loaded = runtime.read_npz(data)
        if (err := _upstream_error(loaded)) is not None:
            raise RuntimeError(f"upstream: {err}")
        runtime.write_json(out, claim_module(slug).theory(loaded, params))

    return _guarded("theory", Path(out), _json_error, body)


def train(slug, scale, point, data, out, base_seed=0, device="auto"):
    manifest, params, seeds = _context(slug, scale, base_seed)
    point_params = registry.require_point(manifest, scale, point)

    def body():
        runtime.defer_torch()  # loaded (one thread) by the first claim code that uses it
        loaded = runtime.read_npz(data)
        if (err := _upstream_error(loaded)) is not None:
            raise RuntimeError(f"upstream: {err}")
        dev = runtime.select_device(scale, device)
        print(f"[replica] train {slug}/{point} on {dev}, seeds {seeds}", flush=True)
        if "torch" in vars(claim_module(slug)):
            runtime.load_torch()  # start-up, not training: kept out of the recorded time
        started = time.perf_counter()
        every_s = float(params.get("checkpoint_every_s", CHECKPOINT_EVERY_S))
        made_by = runtime.fingerprint(
            {"scale": manifest.scale(scale), "point": point, "seeds": seeds, "device": str(dev)},
            [*registry.module_sources(slug), *DRIVER_SOURCES],
        )
        with runtime.checkpointing(out, every_s, made_by) as ckpt:
            arrays = claim_module(slug).train(loaded, point_params, params, seeds, dev)
            runtime.require_finite(arrays, f"train {point}")
            runtime.write_npz(out, {**arrays, TRAIN_SECONDS_KEY: time.perf_counter() - started})
            ckpt.clear()

    Path(train_error_path(out)).unlink(missing_ok=True)
    return _guarded(f"train {point}", Path(out), _train_error, body)


def train_error_path(out) -> Path:
    """Where a failed training leaves its reason: beside, never in, the (cached) output."""
    return Path(f"{out}.error.json")


def _train_error(out: Path, message: str) -> None:
    # A train output is stored in Snakemake's between-workflow cache once its job succeeds,
    # so a failed training writes no output and fails its job (nothing enters the cache);
    # the reason goes beside it for the gallery's error card.
    runtime.write_json(train_error_path(out), {ERROR_KEY: message})


def measure(slug, scale, data, runs, out, base_seed=0):
    manifest, params, seeds = _context(slug, scale, base_seed)
    points = manifest.points(scale)

    def body():
        runtime.defer_torch()
        loaded = runtime.read_npz(data)
        trained = {Path(p).stem: runtime.read_npz(p) for p in runs}
        for arrays in trained.values():
            arrays.pop(TRAIN_SECONDS_KEY, None)
        if (err := _upstream_error(loaded, *trained.values())) is not None:
            raise RuntimeError(f"upstream: {err}")
        if set(trained) != set(points):
            raise RuntimeError(f"runs {sorted(trained)} do not match grid {sorted(points)}")
        metrics = claim_module(slug).measure(loaded, trained, points, params)
        runtime.require_finite(_float_leaves(metrics), "measure")
        runtime.write_json(out, metrics)

    return _guarded("measure", Path(out), _json_error, body)


def verdict(slug, scale, metrics, theory, out, base_seed=0, provenance_out=None):
    """The verdict JSON is a pure function of the results; provenance goes beside it."""
    manifest, params, seeds = _context(slug, scale, base_seed)
    from replica import provenance

    def body():
        runtime.defer_torch()
        loaded = [runtime.read_json(metrics), runtime.read_json(theory)]
        if (err := _upstream_error(*loaded)) is not None:
            result = error_verdict(manifest.data, err)
        else:
            stats = claim_module(slug).verdict(loaded[0], loaded[1], params)
            result = judge(manifest.data, stats, n_seeds=len(seeds))
        result.update(scale=scale, seeds=len(seeds), seed_list=seeds)
        runtime.write_json(out, result)
        if provenance_out:
            runtime.write_json(provenance_out, provenance.collect(manifest, scale, base_seed))

    def write_error(path, message):
        result = error_verdict(manifest.data, message)
        result.update(scale=scale, seeds=len(seeds), seed_list=seeds)
        runtime.write_json(path, result)

    return _guarded("verdict", Path(out), write_error, body)


def run_chain(slug: str, scale: str, results: Path, base_seed: int = 0, device="auto") -> dict:
    """The whole chain in this process (development and tests; Snakemake is the real driver)."""
    manifest, _, _ = _context(slug, scale, base_seed)
    root = Path(results) / scale / slug
    generate(slug, scale, root / "data.npz", base_seed)
    theory(slug, scale, root / "data.npz", root / "theory.json", base_seed)
    runs = []
    for point in manifest.points(scale):
        runs.append(root / "train" / f"{point}.npz")
        if not train(slug, scale, point, root / "data.npz", runs[-1], base_seed, device):
            reason = runtime.read_json(train_error_path(runs[-1]))[ERROR_KEY]
            runtime.write_json(root / "metrics.json", {ERROR_KEY: reason})
            break
    else:
        measure(slug, scale, root / "data.npz", runs, root / "metrics.json", base_seed)
    verdict(
        slug,
        scale,
        root / "metrics.json",
        root / "theory.json",
        root / "verdict.json",
        base_seed,
        root / "provenance.json",
    )
    return runtime.read_json(root / "verdict.json")


def check_manifests(paths: list[str]) -> int:
    """`python -m replica check MANIFEST...`: validate manifests on their own (a pre-registration
    commit holds the manifest before its module and notebook exist); 1 if any is invalid."""
    failed = 0
    for path in paths:
        try:
            registry.check_manifest_alone(Path(path))
            print(f"ok: {path}")
        except registry.InvalidInput as err:
            print(err, file=sys.stderr)
            failed = 1
    return failed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        return check_manifests(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m replica")
    parser.add_argument("step", choices=["generate", "train", "verdict", "notebook", "run"])
    parser.add_argument("slug")
    parser.add_argument("--scale", required=True, choices=registry.SCALES)
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--point")
    parser.add_argument("--data")
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--metrics", help="written by verdict (default: beside --out)")
    parser.add_argument("--theory", help="written by generate, read by verdict (beside --out)")
    parser.add_argument("--verdict")
    parser.add_argument("--out")
    parser.add_argument("--provenance")
    parser.add_argument("--figure")
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    s, sc, seed = args.slug, args.scale, args.base_seed
    if args.out:
        args.theory = args.theory or str(Path(args.out).with_name("theory.json"))
        args.metrics = args.metrics or str(Path(args.out).with_name("metrics.json"))
    if args.step == "generate":
        generate(s, sc, args.out, seed)
        theory(s, sc, args.out, args.theory, seed)
    elif args.step == "train":
        if not train(s, sc, args.point, args.data, args.out, seed, args.device):
            return 1
    elif args.step == "verdict":
        measure(s, sc, args.data, args.runs, args.metrics, seed)
        verdict(s, sc, args.metrics, args.theory, args.out, seed, args.provenance)
    elif args.step == "notebook":
        from replica import notebooks

        notebooks.execute(s, sc, Path(args.verdict).parent, args.out, args.figure)
    elif args.step == "run":
        result = run_chain(s, sc, Path(args.results), seed, args.device)
        print(runtime.to_jsonable({k: result[k] for k in ("status", "reason")}))
        for kind in ("checks", "controls", "preconditions"):
            for row in result.get(kind, []):
                print(
                    kind[:-1],
                    runtime.to_jsonable({k: v for k, v in row.items() if k != "per_seed"}),
                )
        print("robustness", runtime.to_jsonable(result.get("robustness")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
