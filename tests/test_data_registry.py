"""The dataset registry agrees with what tensorflow-datasets registers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from hebbjax.data import DATASETS, UnknownDatasetError, get_spec, load

TFDS_ROOT = Path(tfds.__file__).parent


def _tfds_checksums(name: str) -> dict[str, tuple[int, str, str]]:
    """{url: (size, sha256, file name)} from tfds' url_checksums/ or checksums.tsv."""
    for path in (TFDS_ROOT / "url_checksums" / f"{name}.txt", TFDS_ROOT / "datasets" / name / "checksums.tsv"):
        if path.is_file():
            out = {}
            for line in path.read_text().splitlines():
                fields = line.split("\t") if "\t" in line else line.split()
                if len(fields) >= 3:
                    filename = fields[3] if len(fields) > 3 else fields[0].rsplit("/", 1)[-1]
                    out[fields[0]] = (int(fields[1]), fields[2], filename)
            return out
    raise FileNotFoundError(f"no registered checksums for {name} under {TFDS_ROOT}")


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if s.variants])
def test_registered_sizes_and_sha256_match_tfds(name):
    spec = get_spec(name)
    registered = _tfds_checksums(name)
    checked = 0
    for variant in spec.variants:
        if not variant.registered:
            continue  # CIFAR python archives: tfds downloads the binary ones
        for f in variant.files:
            assert f.url in registered, f"{f.url} not registered by tfds"
            size, sha256, filename = registered[f.url]
            assert (f.size, f.sha256, f.name) == (size, sha256, filename)
            checked += 1
    assert checked


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if s.variants])
def test_registry_versions_match_the_tfds_builders(name):
    spec = get_spec(name)
    assert str(tfds.builder_cls(spec.name).VERSION) == spec.tfds_version
    if spec.tfds_config:
        configs = {c.name for c in tfds.builder_cls(spec.name).BUILDER_CONFIGS}
        assert spec.tfds_config in configs


def test_aliases_and_case():
    assert get_spec("Fashion-MNIST").name == "fashion_mnist"
    assert get_spec("imagenet").name == "imagenet2012"
    assert get_spec("CIFAR10").name == "cifar10"


def test_unknown_name_fails_fast_with_the_supported_names(tmp_path):
    start = time.perf_counter()
    with pytest.raises(
        UnknownDatasetError, match="unknown dataset 'fashion_mnst'.*fashion_mnist.*Did you mean 'fashion_mnist'"
    ):
        load("fashion_mnst", "train", data_dir=tmp_path, tfds_dir=tmp_path / "tfds")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "tfds").exists()
    with pytest.raises(ValueError):  # also a ValueError for callers that do not import hebbjax errors
        load("svhn", "train")


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="no split 'validation'.*'test', 'train'"):
        load("digits", "validation")
