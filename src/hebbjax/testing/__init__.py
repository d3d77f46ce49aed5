"""Test helpers shipped with hebbjax (like ``tfds.testing``): small dataset archives in the
original formats (:mod:`hebbjax.testing.archives`), for tests, benchmarks and offline dry runs.

    from hebbjax import testing
    testing.write_cifar_python(folder / "cifar10", 10, n_train=50, n_test=20)
    hebbjax.data.prepare("cifar10", data_dir=folder, file_checksums=testing.checksums((folder / "cifar10").iterdir()))
"""

from hebbjax.testing.archives import (
    checksums,
    idx_bytes,
    write_cifar_binary,
    write_cifar_python,
    write_imagenet,
    write_imagenette,
    write_mnist,
    write_stl10,
)

__all__ = [name for name in dir() if not name.startswith("_")]
