"""The command: Hydra configs validated before any compute, results.json, multirun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax
import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from hebbjax.config import ConfigError, check_config, to_dataclass
from hebbjax.run import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name, features", [("cifar_softhebb2", 24576), ("cifar_softhebb3", 24576), ("cifar_softhebb4", 24576)])
def test_softhebb_cifar_experiments_compose_and_chain(name, features):
    cfg = to_dataclass(_compose(f"+experiment={name}"))
    assert cfg.data.name == "cifar10" and cfg.training.unsup_batch_size == 10 and cfg.training.readout_epochs == 50
    shapes = check_config(cfg, (32, 32, 3))
    h, w, c = shapes[-1]
    assert h * w * c == features


@pytest.mark.parametrize("name, shape, features", [("stl10_softhebb5", (96, 96, 3), 221184), ("imagenet_softhebb6", (160, 160, 3), 307200)])
def test_stl10_and_imagenet_experiments_compose_with_their_unsupervised_data(name, shape, features):
    cfg = to_dataclass(_compose(f"+experiment={name}"))
    h, w, c = check_config(cfg, shape)[-1]
    assert h * w * c == features  # the papers' classifier input sizes
    if name == "stl10_softhebb5":  # STL10_unlabel -> STL10_100aug
        assert cfg.data.unsup_split == "unlabelled" and cfg.training.unsup_batch_size == 32
        assert cfg.data.augment == ["crop", "flip"] and cfg.training.readout_epochs == 100
    else:  # ImageNet_1160 -> ImageNet_200aug160
        assert cfg.data.limit_unsup == 128116 and cfg.data.unsup_augment == ["resized_crop", "flip"]
        assert cfg.data.placement == "auto" and cfg.training.readout_epochs == 200


@pytest.mark.parametrize("name, data", [("mnist_softhebb_mlp", "mnist"), ("fmnist_softhebb_mlp", "fashion_mnist")])
def test_softhebb_mlp_experiments_compose_as_the_2softmlpmnist_preset(name, data):
    cfg = to_dataclass(_compose(f"+experiment={name}"))
    (block,) = cfg.model.blocks
    assert cfg.data.name == data and block.layer == "dense" and block.input_norm == "none" and block.rule == "soft_wta"
    assert (block.channels, block.t_invert, block.lr, block.lr_power, block.radius) == (2000, 12.0, 0.045, 0.2, 35.0)
    assert check_config(cfg, (28, 28, 1)) == [(2000,)] and cfg.model.classifier_dropout == 0.0


def test_the_repository_cites_papers_not_files_outside_it():
    """Docstrings, tests and docs name papers (and code), never the team's notes beside the repository."""
    import re

    outside = re.compile(r"seed_algorithms\.md|performance_notes\.md|field_survey\.md|shared/reference")
    files = [p for d in ("src", "tests", "benchmarks", "conf", "experiments") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    files.append(ROOT / "README.md")
    assert len(files) > 50
    offending = [str(p.relative_to(ROOT)) for p in files if p != Path(__file__) and outside.search(p.read_text())]
    assert offending == []


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_passes_every_check_before_data(name):
    from hebbjax.config import check

    cfg = to_dataclass(_compose(f"+experiment={name}"))
    assert cfg.experiment == name
    check(cfg)  # dataset, shapes from its registered image shape, rules, reward keys, augmentation


@pytest.mark.parametrize("method", ["random", "bp"])
@pytest.mark.parametrize("name", ["cifar_miconi", "fmnist_miconi"])
def test_surrogate_loss_experiments_have_their_untrained_and_backprop_baselines(name, method):
    """``training.method=random|bp`` rewrites the blocks: the rule's own keys (rule_form) go with the rule."""
    from hebbjax.config import check, resolve

    # The keys only a Hebbian phase or the ridge readout reads are refused with those methods.
    cfg = to_dataclass(_compose(f"+experiment={name}", f"training.method={method}", "data.unsup_augment=[]",
                                *(["readout.kind=adam", "readout.layers=null"] if method == "bp" else [])))
    check(cfg)
    blocks = resolve(cfg).model.blocks
    assert [b.rule for b in blocks] == [{"random": "none", "bp": "bp"}[method]] * 3
    assert all(b.rule_form == "explicit" for b in blocks)


def test_compose_config_is_the_config_the_command_composes():
    from hebbjax.run import compose_config

    overrides = ("+experiment=fmnist_miconi", "seed=3", "model.blocks.1.prune=0")
    cfg = compose_config(*overrides)
    assert cfg == to_dataclass(_compose(*overrides))
    assert (cfg.experiment, cfg.seed, cfg.model.blocks[1].prune, cfg.model.blocks[2].prune) == ("fmnist_miconi", 3, 0.0, 0.99)


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(ConfigCompositionException, match="redout_epochs"):
        _compose("training.redout_epochs=3")
    # Hydra's "+" appends even to a structured config: the schema check still refuses it.
    with pytest.raises(ConfigError, match=r"training\.redout_epochs: unknown key"):
        to_dataclass(_compose("+training.redout_epochs=3"))


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigCompositionException, match="readout_epochs"):
        _compose("training.readout_epochs=many")


def test_unknown_block_key_is_an_error_naming_the_block():
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.chanels: unknown key"):
        to_dataclass(_compose("+model.blocks.0.chanels=3"))


def test_impossible_architecture_is_an_error_naming_the_block():
    cfg = to_dataclass(_compose("+experiment=cifar_softhebb4", "model.blocks.2.pool='avg(16,16,0)'"))
    with pytest.raises(ConfigError, match=r"model.blocks\[2\].pool"):
        check_config(cfg, (32, 32, 3))
    cfg = to_dataclass(_compose("model.blocks.0.groups=5"))
    with pytest.raises(ConfigError, match=r"model.blocks\[0\].groups"):
        check_config(cfg, (8, 8, 1))
    cfg = to_dataclass(_compose("training.mode=parallel"))
    with pytest.raises(ConfigError, match="training.mode"):
        check_config(cfg, (8, 8, 1))


def _run(*args, cwd, cache=None):
    env = dict(os.environ, HYDRA_FULL_ERROR="1", HEBBJAX_COMPILATION_CACHE=str(cache or ""))
    return subprocess.run([sys.executable, "-m", "hebbjax.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


# Small and quick: the digits default on 400 training images and 5 readout epochs.
QUICK = ["training.readout_epochs=5", "training.mode=consecutive", "logging.progress=false", "data.limit_train=400"]


def test_multirun_writes_results_json_per_seed_and_prints_summary_last(tmp_path):
    """One sweep of two seeds; the second job reuses the first one's compilations (persistent cache)."""
    proc = _run("-m", *QUICK, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, cache=tmp_path / "xla")
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = sorted((tmp_path / "sweep").rglob("results.json"))
    assert len(paths) == 2
    results = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["seed"])
    assert [r["seed"] for r in results] == [0, 1]
    for res in results:
        for key in ("test_accuracy", "train_accuracy", "experiment", "seed", "config", "seconds", "unsupervised_images_per_second", "jax_version", "devices"):
            assert key in res, key
        for phase in ("unsupervised", "feature_extraction", "readout", "total"):
            assert res["seconds"][phase] >= 0
        assert res["packages"]["jax"] == jax.__version__ and res["packages"]["flax"] == flax.__version__
        assert res["machine"]["cores"] == os.cpu_count()
        assert res["train_samples"] == 400 and res["test_samples"] == 450
        assert res["config"]["training"]["readout_epochs"] == 5 and res["config"]["seed"] == res["seed"]
        assert 0.5 < res["test_accuracy"] <= 1.0  # a Hebbian net + 5 readout epochs on digits is far above chance
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"default seed=1: test_accuracy={results[1]['test_accuracy']:.4f} train_accuracy={results[1]['train_accuracy']:.4f} " \
        f"total={results[1]['seconds']['wall_total']:.1f}s unsup={results[1]['unsupervised_images_per_second']:.0f} img/s"
    # job folders are named by the overrides that change results, not by logging/checkpoint keys
    assert sorted(p.parent.name for p in paths) == ["data.limit_train=400,seed=0,training.mode=consecutive,training.readout_epochs=5",
                                                     "data.limit_train=400,seed=1,training.mode=consecutive,training.readout_epochs=5"]
    # each job's log file has the phases and the summary line
    log = (paths[1].parent / "run.log").read_text()
    assert "phase 1/2 (hebbian blocks [0, 1]): starting" in log and last in log


def test_bad_override_fails_before_compute(tmp_path):
    proc = _run("training.readout_epochs=many", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode != 0
    assert "readout_epochs" in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_config_errors_come_before_any_data_is_loaded(tmp_path, monkeypatch):
    """CIFAR-10 is not prepared and the data folder is empty: a config error must still be the
    error (naming its key), not a missing-archive error, and nothing is loaded or downloaded."""
    from hebbjax.run import run

    monkeypatch.setenv("HEBBJAX_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HEBBJAX_TFDS_DIR", str(tmp_path / "tfds"))
    cases = {
        r"model\.blocks\[1\]\.kernel": ("+experiment=cifar_softhebb4", "model.blocks.1.kernel=40"),
        r"data\.augment: unknown augmentation.*'flop'": ("+experiment=cifar_softhebb4", "data.augment=[crop,flop]"),
        r"data\.name: unknown dataset 'cifar11'.*Did you mean 'cifar10'": ("data.name=cifar11",),
        r"data\.unsup_split: .*no split 'unlabeled'": ("+experiment=stl10_softhebb5", "data.unsup_split=unlabeled"),
        r"data\.unsup_augment: unknown augmentation.*'crop_resized'": ("data.unsup_augment=[crop_resized]",),
        r"data\.placement: 'imagenet2012' is too large": ("+experiment=imagenet_softhebb6", "data.placement=in_memory"),
        r"data\.augment_options\.scale: expected \[low, high\]": ("data.augment_options.scale=[0.5]",),
        r"data\.limit_unsup: expected a positive": ("data.limit_unsup=0",),
        r"data\.unsup_split: expected a split without evaluation images": ("+experiment=stl10_softhebb5", "data.unsup_split=test"),
        r"data\.limit_unsup: only the unsupervised phase reads it.*method=bp": ("training.method=bp", "data.limit_unsup=100"),
        r"data\.unsup_augment: only the unsupervised phase.*mode=simultaneous": ("training.mode=simultaneous", "data.unsup_augment=[flip]"),
        r"data\.augment_options\.padding: expected 0 <= padding < 8": ("data.augment_options.padding=8",),
        r"data\.augment_options\.flip_prob: expected a probability": ("data.augment_options.flip_prob=2",),
    }
    for pattern, overrides in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            run(to_dataclass(_compose(*overrides)), tmp_path / "out")
    assert not (tmp_path / "tfds").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- data through the command

TINY = [{"layer": "conv", "channels": 4, "kernel": 5, "stride": 4, "padding": 2, "rule": "softhebb", "lr": 0.05,
         "activation": "triangle(1)", "pool": "avg(4,4,0)"}]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Small STL-10, ImageNet, CIFAR-10 and MNIST archives in the original formats, prepared offline once."""
    import tensorflow_datasets as tfds

    from hebbjax import testing
    from hebbjax.data import prepare

    root, tfds_dir = tmp_path_factory.mktemp("archives"), tmp_path_factory.mktemp("tfds")
    wnids = Path(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read_text().split()[:3]
    testing.write_stl10(root / "stl10", n_train=12, n_test=6, n_unlabelled=20)
    testing.write_imagenet(root / "imagenet2012", wnids, per_class=4, n_val=4)
    testing.write_cifar_python(root / "cifar10", 10, n_train=300, n_test=100)
    testing.write_mnist(root / "mnist", n_train=200, n_test=50)
    for name in ("stl10", "imagenet2012", "cifar10", "mnist"):
        prepare(name, data_dir=root, tfds_dir=tfds_dir, file_checksums=testing.checksums(sorted((root / name).iterdir())))
    return root, tfds_dir


def _run_tiny(prepared, tmp_path, monkeypatch, *overrides):
    import dataclasses

    from hebbjax.config import BlockConfig
    from hebbjax.run import run

    root, tfds_dir = prepared
    monkeypatch.setenv("HEBBJAX_TFDS_DIR", str(tfds_dir))
    cfg = to_dataclass(_compose("training.readout_epochs=2", "training.eval_batch_size=4", "training.steps_per_chunk=2",
                                "logging.progress=false", f"data.dir={root}", *overrides))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, blocks=[BlockConfig(**b) for b in TINY]))
    return run(cfg, tmp_path / "out")


def test_imagenet_trains_streamed_from_the_host_with_augmentation(prepared, tmp_path, monkeypatch):
    res = _run_tiny(prepared, tmp_path, monkeypatch, "data.name=imagenet2012", "training.unsup_batch_size=2",
                    "training.readout_batch_size=4", "data.limit_unsup=8", "data.unsup_augment=[resized_crop,flip]",
                    "data.augment=[resized_crop,flip]", "data.augment_options.scale=[0.5,1.0]")
    assert res["streamed"] is True
    assert (res["train_samples"], res["test_samples"], res["unsup_samples"]) == (12, 4, 8)
    # 8 unsupervised images at batch 2; accuracies are fractions of 12 and 4 images
    assert res["unsupervised_images_per_second"] > 0 and res["seconds"]["unsupervised"] > 0
    assert round(res["train_accuracy"] * 12) == pytest.approx(res["train_accuracy"] * 12)
    assert round(res["test_accuracy"] * 4) == pytest.approx(res["test_accuracy"] * 4)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["unsup_samples"] == 8


def test_stl10_hebbian_phase_reads_the_unlabelled_split(prepared, tmp_path, monkeypatch):
    res = _run_tiny(prepared, tmp_path, monkeypatch, "data.name=stl10", "data.unsup_split=unlabelled",
                    "training.unsup_batch_size=4", "training.readout_batch_size=4")
    assert res["streamed"] is False
    assert (res["train_samples"], res["test_samples"], res["unsup_samples"]) == (12, 6, 20)
    assert res["seconds"]["unsupervised"] > 0


# --------------------------------------------------------------------------- sharp edges (issue 2/6)

def _run_digits(tmp_path, *overrides):
    from hebbjax.run import run

    return run(to_dataclass(_compose(*QUICK, *overrides)), tmp_path / "out")


def test_zero_epochs_of_any_phase_run_and_a_readout_free_run_reports_no_accuracy(tmp_path):
    res = _run_digits(tmp_path / "a", "training.readout_epochs=0")
    assert res["test_accuracy"] is None and res["train_accuracy"] is None and res["seconds"]["unsupervised"] > 0
    assert json.loads((tmp_path / "a" / "out" / "results.json").read_text())["test_accuracy"] is None
    res = _run_digits(tmp_path / "b", "training.readout_epochs=0", "training.method=bp")
    assert res["test_accuracy"] is None and res["seconds"]["readout"] == 0
    res = _run_digits(tmp_path / "c", "training.unsup_epochs=0")  # the readout on the blocks at their initialisation
    assert res["unsupervised_images_per_second"] is None and 0.3 < res["test_accuracy"] <= 1.0
    from hebbjax.run import summary

    assert "no readout (training.readout_epochs=0)" in summary({**res, "test_accuracy": None, "seconds": {"wall_total": 1.0}})


@pytest.mark.parametrize("overrides, phase", [(["training.readout_lr=1e38"], "readout"), (["training.readout_lr=nan"], "readout"),
                                              (["training.readout_lr=1e38", "training.method=bp"], "supervised")])
def test_a_diverging_readout_or_backprop_is_the_named_error(tmp_path, overrides, phase):
    from hebbjax.train import NonFiniteUpdate

    with pytest.raises(NonFiniteUpdate, match=rf"^{phase}: an update or loss was NaN/inf in epoch 0") as err:
        _run_digits(tmp_path, *overrides)
    leaves = jax.tree_util.tree_leaves(err.value.state.params)
    assert leaves and all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves)  # the last finite state
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_negative_hebbian_rate_needs_anti_hebbian_and_a_unit_norm_block_warns():
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.lr: -1\.0 is negative.*set model\.blocks\[0\]\.anti_hebbian=true"):
        check_config(to_dataclass(_compose("model.blocks.0.lr=-1")), (8, 8, 1))
    check_config(to_dataclass(_compose("model.blocks.0.lr=-1", "model.blocks.0.anti_hebbian=true")), (8, 8, 1))
    check_config(to_dataclass(_compose("model.blocks.0.lr=-1", "training.method=bp")), (8, 8, 1))  # not a Hebbian block then
    with pytest.warns(UserWarning, match=r"model\.blocks\[1\]\.lr_schedule: 'norm' .*init: unit starts every neuron at norm 1"):
        check_config(to_dataclass(_compose("model.blocks.1.init=unit")), (8, 8, 1))
    with pytest.warns(UserWarning, match=r"unit_norm: true keeps every neuron at norm 1"):
        check_config(to_dataclass(_compose("model.blocks.0.unit_norm=true")), (8, 8, 1))


def test_a_wheel_install_runs_the_default_and_the_experiments_from_any_folder(tmp_path):
    """The configs ship inside the package: built as a wheel and unpacked as pip installs it (its
    dependencies from this environment), the command runs from an unrelated folder; a config
    folder of the user's own joins through Hydra's search path."""
    import zipfile

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("hebbjax-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "hebbjax" / "conf" / "experiment" / "fmnist_softhebb.yaml").is_file()
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "tiny.yaml").write_text("# @package _global_\nexperiment: tiny\ntraining: {readout_epochs: 2}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), HEBBJAX_COMPILATION_CACHE="")
    env.pop("HEBBJAX_CONF_DIR", None)
    probe = subprocess.run([sys.executable, "-c", "import hebbjax.run as r; print(r.__file__, r.CONF_DIR)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)
    assert probe.stdout.split() == [str(site / "hebbjax" / "run.py"), str(site / "hebbjax" / "conf")], probe.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "hebbjax.run", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "+experiment=tiny",
                           "logging.progress=false", "data.limit_train=300", "hydra.run.dir=run"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("tiny seed=0: test_accuracy=")
    assert json.loads((elsewhere / "run" / "results.json").read_text())["config"]["training"]["readout_epochs"] == 2


def test_cifar_miconi_runs_on_a_cifar10_archive(prepared, tmp_path, monkeypatch):
    """The paper's network, whitening and readouts on a generated CIFAR-10 python archive: one
    epoch of 3 batches of 100 (the burn-in shortened to 1 batch so that learning happens)."""
    from hebbjax.run import run

    root, tfds_dir = prepared
    monkeypatch.setenv("HEBBJAX_TFDS_DIR", str(tfds_dir))
    overrides = ["+experiment=cifar_miconi", f"data.dir={root}", "training.unsup_epochs=1", "data.whiten_images=300",
                 "logging.progress=false"] + [f"model.blocks.{i}.burn_in=1" for i in range(3)]
    res = run(to_dataclass(_compose(*overrides)), tmp_path / "out")
    assert res["block_output_shapes"] == [[14, 14, 100], [6, 6, 196], [2, 2, 400]]
    assert (res["train_samples"], res["test_samples"]) == (300, 100)
    assert [(layer["block"], layer["features"]) for layer in res["layers"]] == [(0, 400), (1, 784), (2, 1600)]
    assert res["train_accuracy"] > 0.9  # 1600 features, 300 random images: the ridge fits train


@pytest.mark.parametrize("name", ["mnist_holca_shallow", "mnist_holca_shallow49", "mnist_holca_cnn"])
def test_the_mnist_holca_experiments_run_on_mnist_idx_files(prepared, tmp_path, monkeypatch, name):
    """MNIST's training images are not on the dev machine: the configs run on generated IDX files."""
    from hebbjax.run import run

    root, tfds_dir = prepared
    monkeypatch.setenv("HEBBJAX_TFDS_DIR", str(tfds_dir))
    overrides = [f"+experiment={name}", f"data.dir={root}", "training.unsup_epochs=1", "training.reward_epochs=1",
                 "logging.progress=false", "logging.plots=false"]
    res = run(to_dataclass(_compose(*overrides)), tmp_path / "out")
    assert (res["train_samples"], res["test_samples"]) == (200, 50)
    assert res["resumed_from"] is None and res["seconds"]["unsupervised"] > 0
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["unsupervised_images_per_second"] > 0
    # Both of Holca-Lamarre's phases ran, one epoch of 200 / 50 batches each.
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["step"]) for r in records if r["event"] == "phase"] == [("statistical", 4), ("reward", 4)]
