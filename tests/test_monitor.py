"""Seeing what a network learns: metrics.jsonl, Hebbian diagnostics, pictures, wandb, sweep tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from hebbjax import plot
from hebbjax.config import BlockConfig, Config, ModelConfig, TrainingConfig, to_dataclass
from hebbjax.data import Dataset
from hebbjax.train import Data, init_state, run_phase, setup
from hebbjax.train import diagnostics as diag

ROOT = Path(__file__).resolve().parents[1]


def test_a_known_weight_pattern_drawn_to_png_reads_back_as_the_expected_pixels(tmp_path):
    ramp = np.arange(9.0).reshape(3, 3) - 4.0  # scaled on its own: min -> 0, max -> 255
    flat = np.full((3, 3), 0.7)  # constant: 0 everywhere
    kernel = np.stack([ramp, flat], -1)[:, :, None, :]  # HWIO, one grey input channel, 2 neurons
    path = plot.save_png(plot.tile(plot.filters(kernel, (8, 8, 1)), columns=2, scale=2), tmp_path / "f.png")
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (1 + 6 + 1, 1 + 6 + 1 + 6 + 1) and pixels.dtype == np.uint8  # grey, 1-pixel borders
    assert np.all(pixels[0] == plot.BORDER) and np.all(pixels[:, 7] == plot.BORDER)
    expected = np.round(np.arange(9).reshape(3, 3) / 8 * 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(pixels[1:7, 1:7], expected)
    np.testing.assert_array_equal(pixels[1:7, 8:14], 0)
    colour = plot.tile(plot.filters(np.random.default_rng(0).normal(size=(5, 5, 3, 4)), (32, 32, 3)))
    assert np.asarray(Image.open(plot.save_png(colour, tmp_path / "c.png"))).shape == (13, 13, 3)  # RGB


def test_diagnostics_match_numpy_and_win_rates_sum_to_one():
    rng = np.random.default_rng(0)
    data = Dataset(rng.uniform(size=(32, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32), 3)
    block = BlockConfig(channels=5, kernel=3, padding=0, padding_mode="zeros", input_norm="none", rule="softhebb", t_invert=2.0,
                        lr=0.1, lr_power=0.5, activation="triangle(1)")
    cfg = Config(model=ModelConfig(blocks=[block]), training=TrainingConfig(mode="consecutive", unsup_batch_size=8, readout_batch_size=8,
                                                                          eval_batch_size=8))
    ctx = setup(cfg, Data(data, data), progress=False)
    state = run_phase(ctx, 0, init_state(ctx))
    d = jax.device_get(diag.diagnostics(ctx, state, jnp.asarray(data.images), blocks=(0,), total_steps=4, inputs=ctx.inputs))["block_0"]
    w = np.asarray(state.params["block_0"]["layer"]["kernel"], np.float64)  # (3, 3, 1, 5)
    x = np.asarray(data.images, np.float64)
    patches = np.stack([x[:, i:i + 4, j:j + 4, 0] for i in range(3) for j in range(3)], -1)  # (32, 4, 4, 9), (kh, kw) order
    u = patches @ w.reshape(9, 5)
    norms = np.linalg.norm(w.reshape(9, 5), axis=0)
    np.testing.assert_allclose([d["radius_mean"], d["radius_std"], d["convergence"]],
                               [norms.mean(), norms.std(), np.abs(norms - 1).mean()], rtol=1e-5)
    assert d["r1"] == np.sum(np.abs(norms - 1) < 1e-2)
    wins = np.bincount(u.argmax(-1).ravel(), minlength=5) / u[..., 0].size
    np.testing.assert_allclose(d["win_rate"], wins, rtol=1e-6)
    assert d["win_rate"].sum() == pytest.approx(1.0) and d["never_win"] == np.sum(wins == 0)
    s = np.exp(2.0 * (u - u.max(-1, keepdims=True)))
    s /= s.sum(-1, keepdims=True)
    y = np.where(np.eye(5)[u.argmax(-1)] > 0, s, -s)  # SoftHebb's signed soft-WTA
    assert d["hebbian_fraction"] == pytest.approx(np.maximum(y, 0).sum() / np.abs(y).sum(), rel=1e-5)
    assert d["lr_mean"] == pytest.approx(0.1 * np.mean((np.abs(norms - 1) + 1e-10) ** 0.5), rel=1e-5)


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from hebbjax.run import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return to_dataclass(compose(config_name="config", overrides=list(overrides)))


QUICK = ["logging.progress=false", "data.limit_train=300", "training.readout_epochs=3", "training.steps_per_chunk=10",
         "logging.diagnostics_every=2"]


def test_a_run_writes_metrics_lines_and_pictures_that_plot_redraws(tmp_path):
    from hebbjax.run import run

    run_dir = tmp_path / "run"
    results = run(_compose(*QUICK), run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events[-1] == "results" and events.count("phase") == 2
    chunks = [r for r in records if r["event"] == "chunk"]
    assert all({"phase", "epoch", "step", "time", "images_per_second"} <= set(r) for r in chunks)
    hebbian = [r for r in chunks if r["phase_index"] == 0]
    assert [r["step"] for r in hebbian] == [10, 20, 30] and "diagnostics" in hebbian[1] and "diagnostics" not in hebbian[0]
    assert set(hebbian[1]["diagnostics"]) == {"block_0", "block_1"}
    assert {"radius_mean", "convergence", "r1", "never_win", "hebbian_fraction", "lr_mean"} <= set(hebbian[1]["diagnostics"]["block_0"])
    epochs = [r for r in records if r["event"] == "epoch" and r["phase"] == "readout"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in epochs)
    assert records[-1]["test_accuracy"] == results["test_accuracy"]
    drawn = sorted(p.name for p in (run_dir / "plots").glob("phase2_*.png"))
    assert drawn == ["phase2_readout_accuracy.png", "phase2_readout_filters.png", "phase2_readout_receptive_fields_block1.png",
                     "phase2_readout_weight_norms.png", "phase2_readout_win_rates.png"]
    proc = subprocess.run([sys.executable, "-m", "hebbjax.plot", str(run_dir), "--out", str(tmp_path / "again")],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, HEBBJAX_COMPILATION_CACHE=""))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "again").glob("*.png")) == [n.removeprefix("phase2_readout_") for n in drawn]
    # the redrawn filters are the run's: the same pixels
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again" / "filters.png")),
                                  np.asarray(Image.open(run_dir / "plots" / "phase2_readout_filters.png")))


def _wandb_records(path: Path) -> list:
    """The records of a wandb transaction log (``run-*.wandb``: 7-byte header, then 32 KiB blocks
    of records, each a 7-byte header (crc, length, type) and a protobuf ``Record``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending, out = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full / last fragment
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
        elif kind == 0:
            break
    return out


def _no_network() -> list[str]:
    """A command prefix that runs without any network (a fresh network namespace), where possible."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


def test_wandb_offline_writes_a_run_folder_with_the_metrics_without_network(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, HEBBJAX_COMPILATION_CACHE="", WANDB_SILENT="true")
    env.pop("WANDB_API_KEY", None)
    cmd = [*_no_network(), sys.executable, "-m", "hebbjax.run", *QUICK, "logging.wandb.enabled=true", "logging.wandb.mode=offline",
           "+logging.wandb.tags=[test]", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = _wandb_records(log)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert any("accuracy" in h and "loss" in h for h in history)  # readout epochs
    assert any("diagnostics/block_0/radius_mean" in h for h in history)
    summary = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
               for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    results = json.loads((run_dir / "results.json").read_text())
    assert summary["test_accuracy"] == results["test_accuracy"]
    config = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "run" for i in r.run.config.update}
    assert config["training"]["readout_epochs"] == 3 and config["logging"]["wandb"]["tags"] == ["test"]
    assert any(r.WhichOneof("record_type") == "run" and list(r.run.tags) == ["test"] for r in records)


def test_an_unreachable_wandb_server_never_fails_the_run(tmp_path):
    env = dict(os.environ, HEBBJAX_COMPILATION_CACHE="", WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="5")
    cmd = [*_no_network(), sys.executable, "-m", "hebbjax.run", *QUICK, "logging.wandb.enabled=true", "logging.wandb.mode=online",
           f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wandb" in proc.stdout + proc.stderr and "the run goes on without it" in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test_accuracy"] > 0.5


def test_report_groups_the_seeds_of_a_multirun_averages_them_and_names_broken_jobs(tmp_path, capsys):
    from hebbjax import report

    def job(name, overrides, seed, accuracy):
        folder = tmp_path / "sweep" / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*overrides, f"seed={seed}"]))
        if accuracy is not None:
            (folder / "results.json").write_text(json.dumps({"seed": seed, "test_accuracy": accuracy}))

    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        job(f"a{seed}", ["model.blocks.0.lr=0.1", "logging.progress=false"], seed, acc)
    for seed, acc in enumerate([0.95, 0.97]):
        job(f"b{seed}", ["model.blocks.0.lr=0.2"], seed, acc)
    job("crashed", ["model.blocks.0.lr=0.3"], 0, None)
    rows, broken = report.collect(tmp_path / "sweep")
    assert [r["overrides"] for r in rows] == ["model.blocks.0.lr=0.2", "model.blocks.0.lr=0.1"]  # best first
    assert rows[1]["n"] == 3 and rows[1]["seeds"] == [0, 1, 2]
    assert rows[1]["mean"] == pytest.approx(0.92) and rows[1]["std"] == pytest.approx(np.std([0.90, 0.92, 0.94]))
    assert broken == ["crashed"]
    report.main([str(tmp_path / "sweep")])
    out = capsys.readouterr().out
    assert "| `model.blocks.0.lr=0.2` | 2 (0, 1) | 96.00 ± 1.00 % |" in out and "`crashed`" in out
    assert (tmp_path / "sweep" / "report.csv").read_text().splitlines()[1].startswith("model.blocks.0.lr=0.2,2,0 1,0.96")


def test_an_optuna_search_on_the_digits_default_runs_its_trials(tmp_path):
    cmd = [sys.executable, "-m", "hebbjax.run", "-m", "+experiment=digits_optuna", "hydra.sweeper.n_trials=3", "training.readout_epochs=2",
           "data.limit_train=300", "logging.progress=false", "logging.plots=false", f"hydra.sweep.dir={tmp_path / 'search'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, HEBBJAX_COMPILATION_CACHE=str(tmp_path / "xla")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    results = [json.loads(p.read_text()) for p in (tmp_path / "search").rglob("results.json")]
    assert len(results) == 3 and best["best_value"] == pytest.approx(max(r["test_accuracy"] for r in results))
    assert len({r["config"]["model"]["blocks"][0]["lr"] for r in results}) == 3  # three different trials
    assert all(r["config"]["data"]["validation"] for r in results)  # the objective is the validation split


def test_read_metrics_keeps_the_last_line_of_a_step_and_an_epochs_complete_mean(tmp_path):
    """A resumed run appends: the steps after its checkpoint appear twice (the last line counts),
    and an epoch cut by the kill gets a second mean over its resumed steps only (``steps``), which
    must not replace the mean over all its steps; a half-written last line is skipped."""
    from hebbjax.train.monitor import read_metrics

    lines = [{"event": "chunk", "phase_index": 0, "step": 7, "loss": 2.0}, {"event": "epoch", "phase_index": 0, "epoch": 0, "loss": 1.5},
             {"event": "chunk", "phase_index": 0, "step": 7, "loss": 2.5}, {"event": "epoch", "phase_index": 0, "epoch": 0, "loss": 9.0, "steps": 3},
             {"event": "epoch", "phase_index": 0, "epoch": 1, "loss": 0.5, "steps": 4}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"event": "chunk", "ste')
    got = {(r["event"], r.get("step"), r.get("epoch")): r["loss"] for r in read_metrics(path)}
    assert got == {("chunk", 7, None): 2.5, ("epoch", None, 0): 1.5, ("epoch", None, 1): 0.5}
