"""Preparing datasets into a tfds data_dir, offline from local archives or by download.

Where things live:

* **Original archives** (offline): ``<data_dir>/<tfds name>/<registered file name>``,
  where ``data_dir`` is the ``data_dir`` argument or else ``$HEBBJAX_DATA_DIR``
  (e.g. ``$HEBBJAX_DATA_DIR/fashion_mnist/train-images-idx3-ubyte.gz``).
* **Prepared datasets** (tfds ``array_record`` files): the ``tfds_dir`` argument,
  else ``$HEBBJAX_TFDS_DIR``, else ``<data_dir>/tfds`` when a data_dir is known and
  writable, else ``~/.cache/hebbjax/tfds``. A dataset already prepared in any of
  these is reused. Downloads (online mode) go to ``<tfds_dir>/downloads``.

Offline preparation verifies each archive's size and SHA-256 against the values
tfds registers (:mod:`hebbjax.data.registry`) before reading it, never opens a
network connection and never needs TensorFlow. A dataset is built in a hidden
temporary folder inside the tfds_dir and renamed into place only when complete,
so a failure leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from hebbjax.data.archives import verify_file
from hebbjax.data.errors import MissingFileError, OfflineError
from hebbjax.data.registry import DatasetSpec, FileSpec, SourceVariant, get_spec

log = logging.getLogger(__name__)

ENV_DATA_DIR = "HEBBJAX_DATA_DIR"
ENV_TFDS_DIR = "HEBBJAX_TFDS_DIR"
DEFAULT_TFDS_DIR = Path("~/.cache/hebbjax/tfds")
_INCOMPLETE_PREFIX = ".incomplete-"
_PROBE_TIMEOUT_S = 3.0

#: Registered file name -> (size in bytes, sha256): overrides the registry, e.g.
#: for small test archives in the original formats.
FileChecksums = Mapping[str, tuple[int, str]]


# --------------------------------------------------------------------------- folders


def source_root(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder of original archives: ``data_dir`` or ``$HEBBJAX_DATA_DIR``."""
    root = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    return Path(root).expanduser() if root is not None else None


def tfds_dir_candidates(data_dir: str | os.PathLike | None, tfds_dir: str | os.PathLike | None = None) -> list[Path]:
    """The tfds data_dirs to look in for a prepared dataset, in order."""
    if tfds_dir is not None:
        return [Path(tfds_dir).expanduser()]
    if os.environ.get(ENV_TFDS_DIR):
        return [Path(os.environ[ENV_TFDS_DIR]).expanduser()]
    root = source_root(data_dir)
    default = DEFAULT_TFDS_DIR.expanduser()
    return [root / "tfds", default] if root is not None else [default]


def _writable(path: Path) -> bool:
    """Whether ``path`` or, if absent, its nearest existing parent is writable.

    A folder without any write permission bit counts as read-only even for root
    (who could write anyway): a shared, read-only data folder is left untouched.
    """
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def prepared_path(spec: DatasetSpec, tfds_dir: Path) -> Path:
    """``<tfds_dir>/<name>[/<config>]/<version>``: where tfds keeps the dataset."""
    return tfds_dir / spec.name / (spec.tfds_config or "") / spec.tfds_version


def find_prepared(spec: DatasetSpec, candidates: list[Path]) -> Path | None:
    """The first candidate tfds_dir holding a complete prepared ``spec``."""
    for tfds_dir in candidates:
        if (prepared_path(spec, tfds_dir) / "dataset_info.json").is_file():
            return tfds_dir
    return None


# --------------------------------------------------------------------------- sources


def _describe(path: Path, f: FileSpec) -> str:
    return f"{path} ({f.size} bytes, sha256 {f.sha256})"


def find_sources(spec: DatasetSpec, source_dir: Path) -> tuple[SourceVariant, dict[str, Path]]:
    """Picks the first variant whose files are all in ``source_dir``.

    Raises:
      MissingFileError: naming every expected path, size and sha256.
    """
    for variant in spec.variants:
        present = {f.name: source_dir / f.name for f in variant.files if (source_dir / f.name).is_file()}
        required = [f.name for f in variant.files if f.name not in variant.optional]
        if all(n in present for n in required) and present:
            return variant, present
    options = []
    for variant in spec.variants:
        missing = [f for f in variant.files if not (source_dir / f.name).is_file()]
        kind = "any of" if variant.optional else "all of"
        options.append(f"{kind}: " + "; ".join(_describe(source_dir / f.name, f) for f in missing))
    raise MissingFileError(
        f"cannot prepare {spec.name!r} offline: missing file(s) in {source_dir}. Expected " + " -- or -- ".join(options)
    )


def verify_sources(
    variant: SourceVariant,
    files: Mapping[str, Path],
    *,
    verify_checksums: bool = True,
    file_checksums: FileChecksums | None = None,
) -> None:
    """Checks each file's registered (or overridden) size and SHA-256."""
    registered = {f.name: f for f in variant.files}
    for name, path in files.items():
        spec = registered[name]
        if file_checksums and name in file_checksums:
            size, sha256 = file_checksums[name]
            spec = FileSpec(name, size, sha256, spec.url)
        if verify_checksums:
            log.info("verifying %s", _describe(path, spec))
            verify_file(path, spec)
        elif not path.is_file():
            raise MissingFileError(f"missing file {_describe(path, spec)}")


# --------------------------------------------------------------------------- building


def _ensure_importlib_resources() -> None:
    """tfds 4.9.10 needs the ``importlib_resources`` backport to locate its registered
    checksums, but only declares it for Python < 3.9; Python 3.11's stdlib module
    provides the same API, so alias it when the backport is absent."""
    try:
        import importlib_resources  # noqa: F401
    except ImportError:
        import importlib.resources
        import importlib.resources.abc  # noqa: F401

        sys.modules.setdefault("importlib_resources", importlib.resources)


def _build(
    spec: DatasetSpec,
    tfds_dir: Path,
    variant: SourceVariant,
    files: Mapping[str, Path] | None,
) -> None:
    """Builds into a temporary folder inside ``tfds_dir``, then renames it into place."""
    import tensorflow_datasets as tfds

    from hebbjax.data.builders import make_builder

    _ensure_importlib_resources()
    tfds_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_INCOMPLETE_PREFIX}{spec.name}-", dir=tfds_dir))
    try:
        builder = make_builder(spec, tmp, variant, files)
        download_dir = tmp / "downloads" if files is not None else tfds_dir / "downloads"
        builder.download_and_prepare(
            download_dir=str(download_dir),
            file_format="array_record",
            # No GCS look-up: offline it would retry the network for minutes.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
        built = Path(builder.data_dir)
        final = tfds_dir / built.relative_to(tmp)
        if final != prepared_path(spec, tfds_dir):
            raise RuntimeError(
                f"the installed tensorflow-datasets prepares {spec.tfds_name} as {final}, but hebbjax "
                f"expects version {spec.tfds_version}; update hebbjax.data.registry"
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(built, final)  # atomic within one filesystem
        except OSError:
            if not (final / "dataset_info.json").is_file():
                raise
            log.info("%s was prepared concurrently by another process; keeping that one", final)
        config_meta = tmp / spec.name / ".config"  # default-config record of tfds
        if config_meta.is_dir() and not (tfds_dir / spec.name / ".config").exists():
            with contextlib.suppress(OSError):
                os.rename(config_meta, tfds_dir / spec.name / ".config")
        log.info("prepared %s in %s", spec.tfds_name, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in (tfds_dir / spec.name / (spec.tfds_config or ""), tfds_dir / spec.name):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only removes folders left empty by a failure


def _network_reachable(urls: list[str], timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the first URL's host opens within ``timeout``.

    Runs in a thread so that a hanging DNS look-up cannot block past the timeout.
    """
    url = urllib.parse.urlsplit(urls[0])
    port = url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((url.hostname, port), timeout=timeout):
            ok.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)


def _offline_instructions(spec: DatasetSpec, root: Path | None) -> str:
    folder = (root or Path(f"${ENV_DATA_DIR}")) / spec.name
    options = " -- or -- ".join("; ".join(_describe(folder / f.name, f) for f in v.files) for v in spec.variants)
    return f"To prepare it offline, put the original archive(s) at: {options}"


def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    tfds_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    verify_checksums: bool = True,
    file_checksums: FileChecksums | None = None,
) -> Path:
    """Makes sure dataset ``name`` is prepared; returns the tfds data_dir holding it.

    Args:
      name: dataset name (see :data:`hebbjax.data.registry.DATASETS`).
      data_dir: folder of original archives (default ``$HEBBJAX_DATA_DIR``); when
        ``<data_dir>/<name>/`` exists the dataset is prepared offline from it.
      tfds_dir: where prepared datasets live (see module docstring).
      download: None: download (as tfds does) only when no local folder exists;
        False: never; True: download even if a local folder exists.
      verify_checksums: check each archive's registered size and SHA-256 (offline).
      file_checksums: per-file (size, sha256) overriding the registered values.

    Raises:
      UnknownDatasetError, MissingFileError, ChecksumError, ArchiveFormatError,
      OfflineError: with the file path and what was expected.
    """
    spec = get_spec(name)
    if not spec.variants:
        raise ValueError(f"dataset {spec.name!r} is embedded and needs no preparation")
    candidates = tfds_dir_candidates(data_dir, tfds_dir)
    found = find_prepared(spec, candidates)
    if found is not None:
        return found
    target = next((d for d in candidates if _writable(d)), None)
    if target is None:
        raise PermissionError(f"no writable folder to prepare {spec.name!r} in: {[str(c) for c in candidates]}")
    root = source_root(data_dir)
    source_dir = root / spec.name if root is not None else None
    if download is not True and source_dir is not None and source_dir.is_dir():
        variant, files = find_sources(spec, source_dir)
        verify_sources(variant, files, verify_checksums=verify_checksums, file_checksums=file_checksums)
        _build(spec, target, variant, files)
        return target
    if download is False or spec.manual_only:
        why = "it cannot be downloaded automatically" if spec.manual_only else "download=False"
        raise MissingFileError(
            f"dataset {spec.name!r} is not prepared in {[str(c) for c in candidates]} and {why}. "
            + _offline_instructions(spec, root)
        )
    variant = next(v for v in spec.variants if v.registered)
    if not _network_reachable([f.url for f in variant.files if f.url]):
        raise OfflineError(
            f"dataset {spec.name!r} is not prepared and {variant.files[0].url} is unreachable (offline?). "
            + _offline_instructions(spec, root)
        )
    _build(spec, target, variant, None)
    return target
