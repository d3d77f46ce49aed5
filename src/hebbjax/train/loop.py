"""The training loop: unsupervised Hebbian phase, frozen features, linear readout; BP and Random
baselines; SoftHebb's successive / consecutive / simultaneous modes.

Everything heavy runs in jit-compiled, data-parallel chunks of steps (:mod:`hebbjax.train.parallel`).
A split either lives on the device(s) (:class:`ArrayData`) or streams from the host in chunks of
batches copied ahead of the step (:class:`StreamData`, ImageNet); see :mod:`hebbjax.train.sources`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hebbjax.config import Config, check_config
from hebbjax.data.loading import to_float
from hebbjax.nn.network import Classifier, HebbianNetwork, build_network, is_hebbian
from hebbjax.train import plasticity
from hebbjax.train.parallel import (
    AXIS, check_batch, epoch_indices, make_mesh, map_batches, per_device, put_batches, replicate, scan_batches, scan_chunk,
)
from hebbjax.train.sources import ArrayData, Source, StreamData, chunk_steps, chunks, close


def halving_schedule(lr: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
    """SoftHebb's ``CustomStepLR``: halve at epochs ``int(n * f)``, f in {.2,.35,.5,.6,.7,.8,.9} for
    n >= 50, f in {.5,.75} for 20 <= n < 50, no decay below 20 epochs."""
    if epochs >= 50:
        fractions = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)
    elif epochs >= 20:
        fractions = (0.5, 0.75)
    else:
        fractions = ()
    boundaries: dict[int, float] = {}
    for f in fractions:
        step = int(epochs * f) * steps_per_epoch
        boundaries[step] = boundaries.get(step, 1.0) * 0.5
    return optax.piecewise_constant_schedule(lr, boundaries)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class NonFiniteUpdate(FloatingPointError):
    """A Hebbian update contained NaN/inf; the last finite parameters were kept."""


class Trainer:
    """Trains and evaluates one configured network.

    ``train`` / ``test``: :class:`ArrayData` (on the device) or :class:`StreamData` (from the host).
    ``unsup``: the images of the unsupervised phase when they are not ``train`` (STL-10's
    unlabelled split); its labels are not read. ``unsup_limit``: that phase reads only the first
    N of them (in device memory no copy is made; a stream is limited when opened instead,
    ``StreamData.from_stream(limit=...)``).
    ``augment``: optional ``fn(key, images) -> images`` applied per batch on the device in the
    supervised phases (readout / BP); with it, the readout cannot use cached features.
    ``unsup_augment``: the same for the unsupervised phase (ImageNet: resized crop and flip).
    """

    def __init__(
        self,
        cfg: Config,
        train: Source,
        test: Source,
        *,
        unsup: Source | None = None,
        unsup_limit: int | None = None,
        augment: Callable | None = None,
        unsup_augment: Callable | None = None,
        mesh=None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        t = cfg.training
        self.blocks = list(cfg.model.blocks)
        if t.method == "bp":
            self.blocks = [dataclasses.replace(b, rule="bp") for b in self.blocks]
        elif t.method == "random":
            self.blocks = [dataclasses.replace(b, rule="none") if is_hebbian(b) else b for b in self.blocks]
        self.shapes = check_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, blocks=self.blocks)), train.image_shape)
        unsup_source = train if unsup is None else unsup
        for name, other in (("test", test), ("unsup", unsup_source)):
            if other.image_shape != train.image_shape:
                raise ValueError(f"{name}: images of shape {other.image_shape}, expected the training images' {train.image_shape}")
        if isinstance(train, ArrayData) and isinstance(test, ArrayData) and train.images.dtype != test.images.dtype:
            raise ValueError(f"test: images are {test.images.dtype}, expected the training images' {train.images.dtype}")
        self.mesh = mesh or make_mesh()
        for key, bs in (("training.unsup_batch_size", t.unsup_batch_size), ("training.readout_batch_size", t.readout_batch_size), ("training.eval_batch_size", t.eval_batch_size)):
            check_batch(bs, self.mesh, key)
        self.augment, self.unsup_augment = augment, unsup_augment
        self.progress = progress
        self.num_classes = train.num_classes
        self.model: HebbianNetwork = build_network(self.blocks, train.num_classes, cfg.model.classifier_dropout, AXIS)
        self.eval_model = build_network(self.blocks, train.num_classes, cfg.model.classifier_dropout, None)
        self.hebbian_blocks = [i for i, b in enumerate(self.blocks) if is_hebbian(b)]
        # float32, or float64 when jax_enable_x64 is on (numerical checks)
        self.dtype = jnp.asarray(1.0).dtype
        self.train_data, self.test_data = self._place(train), self._place(test)
        self.unsup_data = self.train_data if unsup is None else self._place(unsup)
        self.normalization, self.unsup_normalization = train.normalization, unsup_source.normalization
        self.n_train, self.n_unsup = train.num_examples, unsup_source.num_examples
        if unsup_limit is not None:
            if isinstance(unsup_source, StreamData):
                raise ValueError("unsup_limit: limit a streamed split when opening it (StreamData.from_stream(limit=...))")
            if unsup_limit < 1:
                raise ValueError(f"unsup_limit: expected a positive number of images, got {unsup_limit}")
            self.n_unsup = min(self.n_unsup, unsup_limit)
        has_unsup_phase = t.method == "hebbian" and t.mode != "simultaneous"
        for key, batch, n, source in (("training.unsup_batch_size", t.unsup_batch_size, self.n_unsup, "unsupervised"),
                                      ("training.readout_batch_size", t.readout_batch_size, self.n_train, "training")):
            if batch > n and (has_unsup_phase or source == "training"):
                raise ValueError(f"{key}: {batch} is larger than the {source} set ({n} images; see data.limit_train / data.limit_unsup)")
        self.timings: dict[str, float] = {"unsupervised": 0.0, "feature_extraction": 0.0, "readout": 0.0}
        self.unsup_images = 0
        # RBG keys: same statistical quality for init/shuffling/dropout, and XLA compiles them in
        # a fraction of threefry's time on CPU (threefry dominated the compile time of small runs).
        self.key = jax.random.key(cfg.seed, impl="rbg")
        self._cache: dict[tuple, Callable] = {}
        self._init_state(np.zeros((1, *train.image_shape), np.float32))

    # ------------------------------------------------------------------ data
    def _place(self, source: Source) -> dict | StreamData:
        """In-memory splits go to the device(s) once (uint8 stays uint8: 4x less memory);
        streams stay on the host."""
        if isinstance(source, StreamData):
            return source
        images = source.images if source.images.dtype == np.uint8 else jnp.asarray(source.images, self.dtype)
        return replicate({"image": images, "label": jnp.asarray(source.labels, jnp.int32)}, self.mesh)

    def _input(self, images: jax.Array, normalization: str) -> jax.Array:
        """Network input: uint8 pixels mapped to floats on the device (a no-op on floats)."""
        return to_float(images, normalization).astype(self.dtype)

    # ------------------------------------------------------------------ state
    def _init_state(self, example: np.ndarray) -> None:
        k_init, k_mask, self.key = jax.random.split(self.key, 3)
        variables = jax.jit(self.eval_model.init)({"params": k_init, "dropout": k_init}, jnp.asarray(example, jnp.float32))
        variables = jax.tree_util.tree_map(lambda v: v.astype(self.dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, variables)
        params = variables["params"]
        self.masks = plasticity.pruning_masks(self.blocks, params, k_mask)
        params = plasticity.apply_masks(params, self.masks)
        self.state = replicate({
            "params": params,
            "batch_stats": variables.get("batch_stats", {}),
            "rule_state": variables.get("rule_state", {}),
        }, self.mesh)

    def variables(self) -> dict:
        s = self.state
        return {"params": s["params"], "batch_stats": s["batch_stats"], "rule_state": s["rule_state"]}

    # ------------------------------------------------------------------ chunked epochs
    def _compiled(self, key: tuple, make: Callable) -> Callable:
        """Compiled runners (chunks of steps, batched evaluation) are reused for identical phases
        (a second epoch loop, repeated predictions, benchmarks)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _run_epochs(self, step: Callable, carry: dict, data: dict | StreamData, batch_size: int, epochs: int, desc: str,
                    check_finite: bool = False, cache_key: tuple | None = None, rows: int | None = None) -> dict:
        """``epochs`` shuffled passes of ``step`` over the device-resident ``data`` (its first
        ``rows`` rows, default all), in jit-compiled chunks of ``training.steps_per_chunk`` steps;
        a :class:`StreamData` goes to :meth:`_run_stream_epochs` (a stream is never limited here)."""
        if isinstance(data, StreamData):
            return self._run_stream_epochs(step, carry, data, batch_size, epochs, desc, check_finite, cache_key)
        make = lambda: scan_chunk(step, self.mesh, donate=False)
        run = make() if cache_key is None else self._compiled(cache_key, make)
        # Once, not per chunk call: features come out of map_batches sharded over the devices,
        # and jit would all-gather them on every call.
        data = replicate(data, self.mesh)
        n = jax.tree_util.tree_leaves(data)[0].shape[0] if rows is None else rows
        steps_per_epoch, bar = self._epoch_setup(n, batch_size, epochs, desc)
        self.key, k_epochs = jax.random.split(self.key)
        idx, valid = epoch_indices(k_epochs, n, batch_size, epochs, self.cfg.training.steps_per_chunk)
        with bar:
            for c in range(idx.shape[0]):
                new, metrics = run(carry, data, idx[c], valid[c])
                self._check_chunk(bar, carry, metrics, valid[c], c * idx.shape[1], steps_per_epoch, desc, check_finite)
                carry = new
        return carry

    def _run_stream_epochs(self, step: Callable, carry: dict, source: StreamData, batch_size: int, epochs: int, desc: str,
                           check_finite: bool = False, cache_key: tuple | None = None) -> dict:
        """:meth:`_run_epochs` for a split streamed from the host: chunks of batches are stacked on
        the host; chunk c+1 is copied to the device(s) while chunk c computes, and the loop waits
        for chunk c before reading c+2 (at most two chunks in device memory)."""
        make = lambda: scan_batches(step, self.mesh)
        run = make() if cache_key is None else self._compiled(("stream", *cache_key), make)
        steps_per_epoch, bar = self._epoch_setup(source.num_examples, batch_size, epochs, desc)
        self.key, k_order = jax.random.split(self.key)
        seed = int(jax.random.bits(k_order, dtype=jnp.uint32))  # the stream's shuffling order
        stream = source.open(batch_size, epochs=epochs, seed=seed, shuffle=True, drop_remainder=True)
        with bar:
            try:
                batches = iter(stream)
                first = next(batches, None)
                if first is None:  # zero epochs
                    return carry
                steps = chunk_steps(batch_size, source.image_shape, first[0].dtype.itemsize, self.cfg.training.steps_per_chunk)
                host_chunks = chunks(itertools.chain([first], batches), steps)
                put = lambda item: None if item is None else (put_batches(item[0], self.mesh), item[1])
                ahead, done = put(next(host_chunks, None)), 0
                while ahead is not None:
                    new, metrics = run(carry, *ahead)  # dispatched; runs while the next chunk is read
                    valid = ahead[1]
                    ahead = put(next(host_chunks, None))
                    jax.block_until_ready(metrics)  # bound what is in flight (host reads may outpace the device)
                    self._check_chunk(bar, carry, metrics, valid, done, steps_per_epoch, desc, check_finite)
                    carry, done = new, done + steps
            finally:
                close(stream)
        return carry

    def _epoch_setup(self, n: int, batch_size: int, epochs: int, desc: str) -> tuple[int, tqdm]:
        """Steps per epoch (drop-last) and the phase's progress bar."""
        steps_per_epoch = n // batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"{desc}: batch size {batch_size} is larger than the dataset ({n} samples)")
        bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", disable=not self.progress, leave=False, mininterval=1.0)
        return steps_per_epoch, bar

    def _check_chunk(self, bar, carry: dict, metrics: dict, valid, step_no: int, steps_per_epoch: int, desc: str, check_finite: bool) -> None:
        """After a chunk: stop with the last finite state on a NaN/inf Hebbian update; progress."""
        if check_finite and not bool(jnp.all(metrics["finite"] | ~jnp.asarray(valid))):
            self.state = {k: carry[k] for k in self.state}
            raise NonFiniteUpdate(
                f"{desc}: a Hebbian update was NaN/inf in epoch {step_no // steps_per_epoch}, within steps "
                f"{step_no}-{step_no + len(valid)}; the last finite parameters were kept (check the input data and learning rates)"
            )
        bar.update(int(np.sum(valid)))
        if "loss" in metrics and self.progress:
            bar.set_postfix(loss=float(jnp.mean(metrics["loss"])), refresh=False)

    @property
    def streamed(self) -> bool:
        """Whether train or test is read from the host (then the readout recomputes features)."""
        return isinstance(self.train_data, StreamData) or isinstance(self.test_data, StreamData)

    # ------------------------------------------------------------------ unsupervised phase
    def train_hebbian(self, plastic: Sequence[int], epochs: int) -> None:
        """Unsupervised epochs updating ``plastic`` blocks together, one update per mini-batch."""
        if not plastic or epochs == 0:
            return
        plastic = tuple(plastic)
        upto = max(plastic) + 1
        t = self.cfg.training
        steps = epochs * (self.n_unsup // t.unsup_batch_size)
        transforms = {i: plasticity.make_transform(self.blocks[i], steps, self.masks.get(i)) for i in plastic}
        carry = dict(self.state)
        carry["opt"] = {i: transforms[i].init(carry["params"][f"block_{i}"]["layer"]) for i in plastic}
        self.key, carry["key"] = jax.random.split(self.key)
        model, blocks, augment, normalization = self.model, self.blocks, self.unsup_augment, self.unsup_normalization

        def step(c, batch):
            x = self._input(batch["image"], normalization)
            if augment is None:
                key, k_drop = jax.random.split(c["key"])
            else:
                key, k_drop, k_aug = jax.random.split(c["key"], 3)
                x = augment(jax.random.fold_in(k_aug, jax.lax.axis_index(AXIS)), x)
            variables = {"params": c["params"], "batch_stats": c["batch_stats"], "rule_state": c["rule_state"]}
            _, mut = model.apply(
                variables, x, train_blocks=plastic, upto=upto, classify=False,
                mutable=["batch_stats", "hebbian"], rngs={"dropout": jax.random.fold_in(k_drop, jax.lax.axis_index(AXIS))},
            )
            params, rule_state, opt, finite = plasticity.hebbian_updates(
                blocks, plastic, c["params"], c["rule_state"], c["opt"], transforms, mut["hebbian"]
            )
            new = {"params": params, "batch_stats": mut.get("batch_stats", c["batch_stats"]), "rule_state": rule_state, "opt": opt, "key": key}
            return new, {"finite": finite}

        data = self.unsup_data if isinstance(self.unsup_data, StreamData) else {"image": self.unsup_data["image"]}
        start = time.perf_counter()
        carry = self._run_epochs(step, carry, data, t.unsup_batch_size, epochs, f"hebbian blocks {list(plastic)}",
                                 check_finite=True, cache_key=("hebbian", plastic, steps), rows=self.n_unsup)
        jax.block_until_ready(carry["params"])
        self.timings["unsupervised"] += time.perf_counter() - start
        self.unsup_images += epochs * (self.n_unsup // t.unsup_batch_size) * t.unsup_batch_size
        self.state = {k: carry[k] for k in self.state}

    # ------------------------------------------------------------------ features and readout
    def features(self, images: jax.Array) -> jax.Array:
        """Frozen features of the whole block stack (evaluation mode), flattened."""
        model, normalization = self.model, self.normalization

        def fn(variables, x):
            f = model.apply(variables, self._input(x, normalization), classify=False)
            return f.reshape(f.shape[0], -1)

        run = self._compiled(("features",), lambda: map_batches(fn, self.mesh, self.cfg.training.eval_batch_size))
        return run(self.variables(), images)

    def train_readout_on_features(self, feats: jax.Array, labels: jax.Array) -> None:
        """Linear classifier on cached features: Adam, cross-entropy, dropout, halving schedule.
        ``feats`` may have more rows than ``labels`` (train then test features): only the first
        ``len(labels)`` are read, so the train part is never copied out."""
        t = self.cfg.training
        clf = Classifier(self.num_classes, self.cfg.model.classifier_dropout)
        tx = self._readout_tx()
        params = self.state["params"]["classifier"]
        self.key, k_carry = jax.random.split(self.key)
        carry = {"params": params, "opt": tx.init(params), "key": k_carry}

        def step(c, batch):
            key, k_drop = jax.random.split(c["key"])
            rng = jax.random.fold_in(k_drop, jax.lax.axis_index(AXIS))

            def loss_fn(p):
                logits = clf.apply({"params": p}, batch["x"], train=True, rngs={"dropout": rng})
                return cross_entropy(logits, batch["y"]), logits

            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(per_device(c["params"]))
            grads = jax.lax.pmean(grads, AXIS)
            updates, opt = tx.update(grads, c["opt"], c["params"])
            return {"params": optax.apply_updates(c["params"], updates), "opt": opt, "key": key}, {"loss": jax.lax.pmean(loss, AXIS)}

        carry = self._run_epochs(step, carry, {"x": feats, "y": labels}, t.readout_batch_size, t.readout_epochs, "readout",
                                 cache_key=("readout",), rows=int(labels.shape[0]))
        params = dict(self.state["params"])
        params["classifier"] = carry["params"]
        self.state = {**self.state, "params": params}

    def _readout_tx(self) -> optax.GradientTransformation:
        t = self.cfg.training
        steps_per_epoch = self.n_train // t.readout_batch_size
        lr = halving_schedule(t.readout_lr, t.readout_epochs, steps_per_epoch) if t.readout_schedule == "halving" else t.readout_lr
        return optax.adam(lr)

    def train_supervised(self, hebbian: Sequence[int] = ()) -> None:
        """End-to-end supervised epochs: the classifier and ``bp`` blocks by Adam on cross-entropy;
        the ``hebbian`` blocks (simultaneous mode) by their rules on the same batches."""
        t = self.cfg.training
        hebbian = tuple(hebbian)
        bp_blocks = tuple(i for i, b in enumerate(self.blocks) if b.rule == "bp")
        train_blocks = tuple(sorted(set(bp_blocks) | set(hebbian)))
        steps = t.readout_epochs * (self.n_train // t.readout_batch_size)
        transforms = {i: plasticity.make_transform(self.blocks[i], steps, self.masks.get(i)) for i in hebbian}
        tx = self._readout_tx()
        carry = dict(self.state)
        carry["opt"] = {i: transforms[i].init(carry["params"][f"block_{i}"]["layer"]) for i in hebbian}
        carry["sup_opt"] = tx.init(carry["params"])
        self.key, carry["key"] = jax.random.split(self.key)
        model, blocks, augment, normalization = self.model, self.blocks, self.augment, self.normalization

        def step(c, batch):
            key, k_drop, k_aug = jax.random.split(c["key"], 3)
            dev = jax.lax.axis_index(AXIS)
            x = self._input(batch["image"], normalization)
            if augment is not None:
                x = augment(jax.random.fold_in(k_aug, dev), x)

            def loss_fn(p):
                logits, mut = model.apply(
                    {"params": p, "batch_stats": c["batch_stats"], "rule_state": c["rule_state"]}, x,
                    train_blocks=train_blocks, train_classifier=True, mutable=["batch_stats", "hebbian"],
                    rngs={"dropout": jax.random.fold_in(k_drop, dev)},
                )
                return cross_entropy(logits, batch["label"]), (mut, logits)

            (loss, (mut, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(per_device(c["params"]))
            grads = jax.lax.pmean(grads, AXIS)
            updates, sup_opt = tx.update(grads, c["sup_opt"], c["params"])
            params = optax.apply_updates(c["params"], updates)
            params, rule_state, opt, finite = plasticity.hebbian_updates(
                blocks, hebbian, params, c["rule_state"], c["opt"], transforms, mut.get("hebbian", {})
            )
            new = {"params": params, "batch_stats": mut.get("batch_stats", c["batch_stats"]), "rule_state": rule_state, "opt": opt, "sup_opt": sup_opt, "key": key}
            return new, {"loss": jax.lax.pmean(loss, AXIS), "finite": finite}

        start = time.perf_counter()
        carry = self._run_epochs(step, carry, self.train_data, t.readout_batch_size, t.readout_epochs, "supervised",
                                 check_finite=bool(hebbian), cache_key=("supervised", hebbian, steps))
        jax.block_until_ready(carry["params"])
        self.timings["readout"] += time.perf_counter() - start
        self.state = {k: carry[k] for k in self.state}

    # ------------------------------------------------------------------ evaluation
    def predict_from_features(self, feats: jax.Array) -> jax.Array:
        """Predicted classes of the trained classifier on cached features."""
        clf = Classifier(self.num_classes, self.cfg.model.classifier_dropout)
        fn = lambda p, x: jnp.argmax(clf.apply({"params": p}, x), -1)
        run = self._compiled(("predict_from_features",), lambda: map_batches(fn, self.mesh, self.cfg.training.eval_batch_size))
        return run(self.state["params"]["classifier"], feats)

    def predict(self, images: jax.Array) -> jax.Array:
        """Predicted classes of the whole network (evaluation mode)."""
        model, normalization = self.model, self.normalization
        fn = lambda v, x: jnp.argmax(model.apply(v, self._input(x, normalization)), -1)
        run = self._compiled(("predict",), lambda: map_batches(fn, self.mesh, self.cfg.training.eval_batch_size))
        return run(self.variables(), images)

    def predict_stream(self, source: StreamData) -> tuple[np.ndarray, np.ndarray]:
        """(predicted classes, labels) of one ordered pass over a streamed split; each batch is
        copied to the device(s) while the previous one is evaluated."""
        batch_size = self.cfg.training.eval_batch_size
        outputs: list[tuple[jax.Array, np.ndarray, int]] = []
        stream = source.open(batch_size, epochs=1, seed=0, shuffle=False, drop_remainder=False)
        try:
            for images, labels in stream:
                n = len(labels)
                if n < batch_size:  # one shape, one compiled program; the padding is cut below
                    images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
                outputs.append((self.predict(put_batches(images, self.mesh, axis=0)), labels, n))
                if len(outputs) > 2:  # at most two batches in flight
                    jax.block_until_ready(outputs[-3][0])
        finally:
            close(stream)
        pred = np.concatenate([np.asarray(p)[:n] for p, _, n in outputs])
        return pred, np.concatenate([y for _, y, _ in outputs]).astype(np.int32)

    def accuracy(self, data: dict | StreamData) -> float:
        """Fraction of a split (as placed by the Trainer) classified correctly."""
        if isinstance(data, StreamData):
            pred, labels = self.predict_stream(data)
            return float(np.mean(pred == labels))
        return float(jnp.mean(self.predict(data["image"]) == data["label"]))

    # ------------------------------------------------------------------ the protocol
    def fit(self) -> dict[str, Any]:
        """Run the configured protocol; return accuracies (fractions), timings and throughput."""
        t = self.cfg.training
        start = time.perf_counter()
        cached = None
        if t.method == "bp" or t.mode == "simultaneous":
            self.train_supervised(hebbian=self.hebbian_blocks if t.method == "hebbian" else ())
        else:
            if t.method == "hebbian":
                if t.mode == "successive":
                    for i in self.hebbian_blocks:
                        self.train_hebbian([i], t.unsup_epochs)
                else:
                    self.train_hebbian(self.hebbian_blocks, t.unsup_epochs)
            if self.augment is None and not self.streamed and not any(b.rule == "bp" for b in self.blocks):
                # Frozen features once (train and test in one compiled pass); the readout never
                # recomputes the block stack.
                s = time.perf_counter()
                images = jnp.concatenate([self.train_data["image"], self.test_data["image"]])
                feats = jax.block_until_ready(self.features(images))
                self.timings["feature_extraction"] += time.perf_counter() - s
                s = time.perf_counter()
                self.train_readout_on_features(feats, self.train_data["label"])
                self.timings["readout"] += time.perf_counter() - s
                cached = feats
            else:
                self.train_supervised()
        if self.streamed:
            train_acc, test_acc = self.accuracy(self.train_data), self.accuracy(self.test_data)
        else:  # one compiled pass over train and test
            if cached is not None:
                pred = self.predict_from_features(cached)
            else:
                pred = self.predict(jnp.concatenate([self.train_data["image"], self.test_data["image"]]))
            labels = jnp.concatenate([self.train_data["label"], self.test_data["label"]])
            correct = np.asarray(pred == labels)
            train_acc, test_acc = float(correct[: self.n_train].mean()), float(correct[self.n_train :].mean())
        self.timings["total"] = time.perf_counter() - start
        unsup = self.timings["unsupervised"]
        return {
            "test_accuracy": test_acc,
            "train_accuracy": train_acc,
            "seconds": dict(self.timings),
            "unsupervised_images_per_second": (self.unsup_images / unsup) if unsup > 0 else None,
            "block_output_shapes": [list(s) for s in self.shapes],
        }
