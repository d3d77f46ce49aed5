"""Checkpoints and resume: a run killed with SIGKILL anywhere and resumed ends bit-identical to
one that was never interrupted; damaged checkpoints fall back; another config is refused.

The kill tests run the command in subprocesses on the digits default (small runs); a checkpoint is
saved after every chunk (``checkpoint.every_minutes=0``). A process is killed right after it
logs the start of the phase the test targets, and the test checks where the kill landed from the
checkpoints the process left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from hebbjax.config import ConfigError, to_dataclass
from hebbjax.train import Checkpoints

COMMON = ["logging.progress=false", "checkpoint.every_minutes=0", "checkpoint.keep=3", "training.steps_per_chunk=7",
          "training.eval_batch_size=450", "data.limit_train=900"]
#: scenario -> (overrides, [(a log line to kill after, the phase index the kill must land in)]);
#: phase None: feature extraction (killed at once when it starts)
SCENARIOS = {
    # consecutive Hebbian phase -> features -> readout on cached features
    "hebbian_features_readout": (["training.unsup_epochs=2", "training.readout_epochs=12"],
                                 [(r"phase 1/2 \(hebbian", 0), (r"extracting the features", None), (r"phase 2/2 \(readout", 1)]),
    "bp": (["training.method=bp", "training.readout_epochs=3"], [(r"phase 1/1 \(supervised", 0)]),
    "simultaneous": (["training.mode=simultaneous", "training.readout_epochs=3"], [(r"phase 1/1 \(supervised", 0)]),
    # streamed from the host: two successive Hebbian phases, then a supervised readout
    "streamed": (["data.placement=stream", "training.mode=successive", "training.readout_epochs=3"],
                 [(r"phase 2/3 \(hebbian blocks \[1\]", 1), (r"phase 3/3 \(supervised", 2)]),
}


def _command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "hebbjax.run", *COMMON, *overrides, f"hydra.run.dir={run_dir}"]


def _env(cache: Path) -> dict[str, str]:
    return dict(os.environ, HYDRA_FULL_ERROR="1", HEBBJAX_COMPILATION_CACHE=str(cache), JAX_PLATFORMS="cpu")


def _saved_phases(run_dir: Path) -> set[int]:
    """Phases of the complete checkpoints in ``run_dir`` (orbax renames a folder when complete)."""
    phases = set()
    for meta in (run_dir / "checkpoints").glob("[0-9]*/meta/metadata"):
        try:
            phases.add(json.loads(meta.read_text())["phase"])
        except (OSError, ValueError):  # being deleted (checkpoint.keep)
            pass
    return phases


def _run_and_kill(command: list[str], env: dict[str, str], pattern: str, run_dir: Path, phase: int | None, delay: float) -> None:
    """Start ``command``; once a line of its output matches ``pattern``, SIGKILL it: at once
    (``phase`` None), or ``delay`` seconds after a checkpoint of ``phase`` is complete."""
    import re

    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            if phase is not None:
                while proc.poll() is None and phase not in _saved_phases(run_dir):
                    time.sleep(0.005)
                time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])


def _final_state(run_dir: Path) -> tuple[dict, dict]:
    state, meta = Checkpoints(run_dir, read_only=True).restore_raw()
    return state, meta


def _newest_meta(run_dir: Path) -> dict:
    return Checkpoints(run_dir, read_only=True).metas()[0][1]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_killed_run_resumes_to_the_same_parameters_bit_for_bit(scenario, tmp_path):
    overrides, kill_points = SCENARIOS[scenario]
    env = _env(tmp_path / "xla")
    reference = subprocess.run(_command(tmp_path / "reference", *overrides), env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "killed"
    rng = random.Random(scenario)
    command = _command(run_dir, *overrides)
    for pattern, phase in kill_points:
        _run_and_kill(command, env, pattern, run_dir, phase, delay=rng.uniform(0.0, 0.3))
        newest = _newest_meta(run_dir)
        if phase is None:  # killed between the end of the Hebbian phase and the readout's first save
            assert newest["phase"] == 0 and newest["complete"], newest
        else:  # killed inside that phase, after one of its checkpoints
            assert newest["phase"] == phase and not newest["complete"], newest
        assert not (run_dir / "results.json").exists()
        command = _command(run_dir, *overrides, f"resume={run_dir}")
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    ref_state, ref_meta = _final_state(tmp_path / "reference")
    state, meta = _final_state(run_dir)
    leaves = jax.tree_util.tree_leaves_with_path(ref_state)
    assert len(leaves) == len(jax.tree_util.tree_leaves(state)) > 5
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    results = json.loads((run_dir / "results.json").read_text())
    ref_results = json.loads((tmp_path / "reference" / "results.json").read_text())
    assert results["resumed_from"] is not None and ref_results["resumed_from"] is None
    assert (results["test_accuracy"], results["train_accuracy"]) == (ref_results["test_accuracy"], ref_results["train_accuracy"])
    assert meta["phase"] == ref_meta["phase"] and meta["complete"]
    # metrics.jsonl as read back: a record for every epoch of every phase; an epoch that ran whole
    # in one process has the reference's means, one cut by a kill the mean of its resumed steps
    from hebbjax.train.monitor import read_metrics

    def epochs(folder):
        return {(r["phase_index"], r["epoch"]): r for r in read_metrics(folder / "metrics.jsonl") if r["event"] == "epoch"}

    ref_epochs, got = epochs(tmp_path / "reference"), epochs(run_dir)
    assert got.keys() == ref_epochs.keys() and len(got) > 2
    without_time = lambda r: {k: v for k, v in r.items() if k != "time"}
    for key, r in got.items():
        if "steps" in r:  # cut by a kill: the mean of the steps after the resume
            assert 0 < r["steps"], (key, r)
        else:
            assert without_time(r) == without_time(ref_epochs[key]), (key, r, ref_epochs[key])


# --------------------------------------------------------------------------- in-process checks

def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from hebbjax.run import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return to_dataclass(compose(config_name="config", overrides=list(overrides)))


QUICK = ["logging.progress=false", "data.limit_train=300", "training.readout_epochs=2", "checkpoint.every_minutes=0",
         "checkpoint.keep=4", "training.steps_per_chunk=20"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One quick run to completion, with its checkpoints."""
    from hebbjax.run import run

    run_dir = tmp_path_factory.mktemp("finished")
    results = run(_compose(*QUICK), run_dir)
    return run_dir, results


def test_resuming_a_finished_run_says_so_and_changes_nothing(finished, caplog):
    from hebbjax.run import run

    run_dir, results = finished
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    again = run(_compose(*QUICK, f"resume={run_dir}"), Path("/nonexistent"))
    assert again == json.loads((run_dir / "results.json").read_text())
    assert "finished already" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_a_checkpoint_of_another_config_is_refused_listing_the_keys_that_differ(finished, tmp_path):
    from hebbjax.run import run

    run_dir, _ = finished
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run_dir, copy)
    (copy / "results.json").unlink()
    with pytest.raises(ConfigError, match=r"different config.*model\.blocks\[0\]\.lr: 0\.08 != 0\.1.*training\.readout_epochs: 2 != 3"):
        run(_compose(*QUICK, "model.blocks.0.lr=0.1", "training.readout_epochs=3", f"resume={copy}"), Path("/nonexistent"))
    # operational keys may change, and a key added to the schema after the checkpoint was written
    # is taken at its default
    metas = list(copy.glob("checkpoints/*/meta/metadata"))
    assert metas
    for path in metas:
        meta = json.loads(path.read_text())
        del meta["config"]["model"]["matmul_dtype"]
        path.write_text(json.dumps(meta))
    run(_compose(*QUICK, "checkpoint.keep=2", "logging.progress=true", f"resume={copy}"), Path("/nonexistent"))
    assert (copy / "results.json").is_file()


def test_a_new_run_into_a_folder_with_checkpoints_is_refused(finished):
    from hebbjax.run import run

    run_dir, _ = finished
    with pytest.raises(ConfigError, match=r"already holds checkpoints; continue it with resume="):
        run(_compose(*QUICK), run_dir)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax, after the failed read
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_with_a_warning(finished, tmp_path):
    import shutil

    from hebbjax.run import run

    run_dir, results = finished
    copy = tmp_path / "damaged"
    shutil.copytree(run_dir, copy)
    (copy / "results.json").unlink()
    numbers = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    newest = copy / "checkpoints" / str(numbers[-1])
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match=rf"checkpoint {newest} is damaged"):
        again = run(_compose(*QUICK, f"resume={copy}"), Path("/nonexistent"))
    assert again["resumed_from"] is not None
    assert (again["test_accuracy"], again["train_accuracy"]) == (results["test_accuracy"], results["train_accuracy"])
    a, _ = _final_state(run_dir)
    b, _ = _final_state(copy)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_model_names_a_folder_without_checkpoints(tmp_path):
    import hebbjax

    with pytest.raises(FileNotFoundError, match="no checkpoints/ folder"):
        hebbjax.load_model(tmp_path)
