"""Install the Go-built servers once into a per-version cache, so repeated runs start instantly."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from hybridops.tasks.core.errors import HybridopsError

WEAVIATE_VERSION = "v1.35.2"  # >= 1.32 for aliases; avoids the 1.32.3/1.32.4 alias bugs
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"  # MinIO tags are not semver: a pinned pseudo-version


@dataclass(frozen=True)
class GoBinary:
    name: str
    module: str
    version: str

    @property
    def cache_dir(self) -> Path:
        root = Path(os.environ.get("HYBRIDOPS_BIN_CACHE", Path.home() / ".cache" / "hybridops" / "bin"))
        return root / f"{self.name}-{self.version}"

    @property
    def path(self) -> Path:
        return self.cache_dir / self.module.rsplit("/", 1)[-1]


WEAVIATE = GoBinary("weaviate", "github.com/weaviate/weaviate/cmd/weaviate-server", WEAVIATE_VERSION)
MINIO = GoBinary("minio", "github.com/minio/minio", MINIO_VERSION)


class InstallError(HybridopsError):
    """A server binary could not be installed; the message says what to do."""


def ensure_binary(binary: GoBinary) -> Path:
    """Return the cached binary, building it with `go install` the first time (minutes, once)."""
    if binary.path.is_file() and os.access(binary.path, os.X_OK):
        return binary.path
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise InstallError(
            f"Go is needed once to build {binary.name} ({binary.module}@{binary.version}). "
            "Install Go >= 1.25 (https://go.dev/doc/install or `apt-get install golang`) and retry."
        )
    staging = binary.cache_dir.with_name(binary.cache_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = {**os.environ, "GOBIN": str(staging), "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    result = subprocess.run(
        [go, "install", f"{binary.module}@{binary.version}"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise InstallError(f"go install {binary.module}@{binary.version} failed:\n{result.stderr[-3000:]}")
    shutil.rmtree(binary.cache_dir, ignore_errors=True)
    staging.rename(binary.cache_dir)  # atomic: a crash mid-build leaves only the .partial folder
    return binary.path


def ensure_all() -> dict[str, Path]:
    return {b.name: ensure_binary(b) for b in (WEAVIATE, MINIO)}


if __name__ == "__main__":
    for name, path in ensure_all().items():
        print(f"{name}: {path}")
