"""Where a result came from: commit, dirty flag, config hash, seeds, package versions."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata

from replica.registry import ROOT, Manifest

PACKAGES = ("torch", "numpy", "scipy", "snakemake", "papermill", "nbconvert", "matplotlib")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def config_hash(manifest: Manifest, scale: str, base_seed: int) -> str:
    payload = {
        "scale": manifest.scale(scale),
        "checks": manifest.data["checks"],
        "controls": manifest.data["controls"],
        "base_seed": base_seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def collect(manifest: Manifest, scale: str, base_seed: int) -> dict:
    return {
        **git_state(),
        "config_hash": config_hash(manifest, scale, base_seed),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
