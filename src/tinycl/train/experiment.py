"""One continual-learning experiment: data, stages, stream, learner, metrics.

``run_experiment`` is what ``tinycl run`` calls; it returns the summary and reports every
evaluation to a callback (the CLI writes metrics.jsonl and drives the progress bar from it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tinycl.config import RunConfig, recipe_overrides, validate
from tinycl.data.base import ImageSet
from tinycl.data.sources import StreamSource, category_labels, checked, from_core50, from_imagesets, resized
from tinycl.errors import TinyclError
from tinycl.models import check_lr_layer, create_model, layer_table, state_digest
from tinycl.models.weights import load_backbone, read_state_dict
from tinycl.replay.codecs import RawImageCodec
from tinycl.replay.memory import LatentReplayMemory
from tinycl.report.metrics import accuracy, average_accuracy, forgetting, per_class_accuracy
from tinycl.train.encoder import LatentEncoder
from tinycl.train.learner import Learner, NonFiniteError
from tinycl.train.stages import prepare_stages


@dataclass
class LoadedData:
    source: StreamSource
    pretrain_key: str
    pretrain_corpus: Callable[[], ImageSet] | None = None
    fingerprint: str = ""  # what the data's content is (the latent cache's key)


@dataclass
class Events:
    """Callbacks the caller may hook: progress of pretraining and of the stream."""

    # (phase name, steps done, steps in all, detail): every phase that can take more than a
    # second -- data generation, pretraining, calibration, encoding, the fidelity check.
    on_phase: Callable[[str, int, int, str], None] | None = None
    on_start: Callable[[int, list[dict]], None] | None = None  # batches, records so far
    on_eval: Callable[[dict], None] | None = None
    on_stages: Callable[[torch.nn.Module, torch.nn.Module], None] | None = None  # (frozen, adaptive), once
    on_deployment: Callable[[object], None] | None = None  # the finished run's tinycl.export Deployment
    notes: list[str] = field(default_factory=list)


# Size of the pretraining corpus: 200 classes x 60 images, enough for features that transfer
# to the benchmark's objects (100 classes gave a 20 % joint upper bound at 64 px).
PRETRAIN_CLASSES = 200
PRETRAIN_PER_CLASS = 60


def pretrain_corpus_config(seed: int, res: int):
    from tinycl.data.synthetic import SyntheticConfig

    return SyntheticConfig(seed=seed, res=res, pretrain_classes=PRETRAIN_CLASSES,
                           pretrain_per_class=PRETRAIN_PER_CLASS)


def pretrain_key(corpus_cfg) -> str:
    """Identifies the pretraining corpus (generator version included) in the weights' file name."""
    from tinycl.data.synthetic import GENERATOR_VERSION

    return f"synthetic-v{GENERATOR_VERSION}:{corpus_cfg!r}"


def phase_reporter(events: Events | None, name: str):
    """``progress(done, total)`` for phase ``name`` (a no-op without a listener)."""
    if events is None or events.on_phase is None:
        return None
    return lambda done, total, detail="": events.on_phase(name, done, total, detail)


def resolve_device(requested: str) -> str:
    """``cpu``, ``cuda`` (refused in one line without a CUDA device) or ``auto``."""
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise TinyclError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def load_data(cfg: RunConfig, events: Events | None = None) -> LoadedData:
    from tinycl.data.synthetic import GENERATOR_VERSION, load_pretrain_corpus

    d, res = cfg.data, cfg.model.res
    joint = cfg.train.strategy == "joint"
    pre_cfg = pretrain_corpus_config(d.data_seed if d.benchmark == "synthetic-core50" else 0, res)
    corpus = lambda: load_pretrain_corpus(  # noqa: E731 - deferred: only without weights
        pre_cfg, progress=phase_reporter(events, "generating the pretraining corpus (classes)"))
    if d.benchmark == "synthetic-core50":
        from tinycl.data.synthetic import SyntheticConfig, load_synthetic_core50

        train, test = load_synthetic_core50(SyntheticConfig(seed=d.data_seed, res=res, frames=d.frames),
                                            progress=phase_reporter(events, "generating synthetic-core50 (sessions)"))
        if d.labels == "category":
            train, test = category_labels(train, 5), category_labels(test, 5)
        source = from_imagesets(train, test, d.scenario, d.run, 50 if d.labels == "object" else 10, 5, joint)
        # A function of its config (in the cache key's settings) and the generator's version.
        fingerprint = f"generator-v{GENERATOR_VERSION}"
    elif d.benchmark == "core50":
        from tinycl.train.latent_cache import ContentIndex, data_fingerprint
        from tinycl.train.pretrain import cache_dir

        source = from_core50(d.data_root, d.scenario, d.run, joint, d.labels)
        if d.resize:
            source = resized(source, res)
        fingerprint = data_fingerprint(Path(d.data_root), ContentIndex(cache_dir() / "content-index.json"))
    else:
        from tinycl.data.user import load_arrays, load_folder

        root = Path(d.data_root)
        train, test = (load_arrays if d.benchmark == "arrays" else load_folder)(root, res, d.resize)
        from tinycl.train.latent_cache import arrays_fingerprint

        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        source = from_imagesets(train, test, d.scenario, d.run, num_classes, None, joint,
                                user=(d.classes_per_task, d.batches))
        fingerprint = arrays_fingerprint(train, test)
    return LoadedData(checked(source), pretrain_key(pre_cfg), corpus, fingerprint)


def build_model(cfg: RunConfig, data: LoadedData, events: Events) -> torch.nn.Module:
    from tinycl.train.pretrain import (
        PROGRESS_STEPS,
        PretrainConfig,
        cache_dir,
        find_pretrained,
        pretrain,
        save_atomic,
    )

    m = cfg.model
    torch.manual_seed(cfg.seed)
    model = create_model(m.name, num_classes=data.source.num_classes, width=m.width)
    check_lr_layer(model, m.lr_layer)
    if m.weights:
        state = read_state_dict(Path(m.weights))
        if any(k.startswith("features.init_block.") for k in state):  # pytorchcv naming
            from tinycl.models.import_weights import import_pytorchcv_mobilenet

            import_pytorchcv_mobilenet(Path(m.weights), model)
        else:
            load_backbone(model, state, m.weights)
        return model
    pcfg = PretrainConfig(m.name, m.width, m.res, data.pretrain_key)
    path = find_pretrained(pcfg)
    if path is None:
        name = f"pretraining {m.name} w{m.width:g} r{m.res} on the synthetic corpus (SGD steps)"
        events.notes.append(f"{name.split(' (')[0]}: the weights are cached for later runs")
        step_time = {"t0": None}
        report = phase_reporter(events, name)

        def on_step(step: int, steps: int, loss: float) -> None:
            if report is None:
                return
            if step == 0:
                step_time["t0"] = time.perf_counter()
                report(0, steps, f"{steps} steps of {pcfg.batch} images; first estimate after {PROGRESS_STEPS} steps")
            else:
                per_step = (time.perf_counter() - step_time["t0"]) / step
                report(step, steps, f"loss {loss:.2f}, about {(steps - step) * per_step / 60:.1f} min left")

        state = pretrain(pcfg, data.pretrain_corpus(), on_step, device=resolve_device(cfg.train.device))
        path = cache_dir() / "weights" / pcfg.file_name()
        save_atomic(state, path)
    load_backbone(model, read_state_dict(path), str(path))
    torch.manual_seed(cfg.seed)
    return model


def frozen_fidelity(frozen, adaptive, stage, source: StreamSource, max_images: int = 4096,
                    layer_samples: int = 64) -> dict:
    """Accuracy of the trained model with the INT8 frozen stage vs the float one (8-bit LR
    output, no Q-bit compression) on (up to ``max_images`` of) the test set, and the per-layer
    error of the integer path."""
    from tinycl.data.base import to_tensor_batch
    from tinycl.quant import compare_accuracy, layer_errors

    xs, ys, count = [], [], 0
    for x, y in source.test_chunks():
        xs.append(x)
        ys.append(y)
        count += len(x)
        if count >= max_images:
            break
    images = to_tensor_batch(np.concatenate(xs)[:max_images])
    labels = torch.from_numpy(np.concatenate(ys)[:max_images])
    acc = compare_accuracy(frozen, adaptive, stage, images, labels)
    errors = layer_errors(frozen, stage, images[:layer_samples])
    return {
        **acc,
        "layers": [
            {"index": e.index, "kind": e.kind, "sqnr_db": round(e.sqnr_db, 2),
             "max_abs_error": e.max_abs_error, "mean_abs_error": e.mean_abs_error,
             "saturated_fraction": e.saturated_fraction}
            for e in errors
        ],
    }


def open_latent_cache(cfg: RunConfig, frozen: torch.nn.Module, encoder: LatentEncoder, fingerprint: str,
                      device: str = "cpu"):
    """The cache of this run's frozen-stage outputs, or None when disabled. Its key hashes the
    frozen stage's tensors, every setting that shapes its outputs and the data's content
    (``fingerprint``, ``LoadedData``)."""
    if not cfg.eval.latent_cache:
        return None
    from tinycl.train.latent_cache import LatentCache, cache_key
    from tinycl.train.pretrain import cache_dir

    d, m, q = cfg.data, cfg.model, cfg.quant
    root = fingerprint
    settings = {
        "model": m.name, "width": m.width, "res": m.res, "lr_layer": m.lr_layer, "bits": cfg.replay.bits,
        "arithmetic": encoder.arithmetic, "weight_quant": q.weight_quant, "observer": q.observer,
        "latent_mode": q.latent_mode, "latent_per_channel": q.latent_per_channel,
        "benchmark": d.benchmark, "data_root": root, "scenario": d.scenario, "run": d.run, "frames": d.frames,
        "data_seed": d.data_seed, "labels": d.labels, "joint": cfg.train.strategy == "joint",
        "classes_per_task": d.classes_per_task, "batches": d.batches, "resize": d.resize,
        # A float frozen stage on CUDA rounds differently from the CPU; the INT8 one does not.
        "device": device if encoder.arithmetic == "float" else "cpu",
    }
    return LatentCache(cache_dir() / "latents", cache_key(frozen, settings))


def deployment_of(cfg: RunConfig, encoder: LatentEncoder, adaptive: torch.nn.Module, memory: LatentReplayMemory,
                  num_classes: int, frozen_digest: str):
    """(the run's ``tinycl.export.Deployment``, None) or (None, why it cannot be deployed): what
    ``tinycl export`` turns into C -- the INT8 stage, the Q-bit quantizer, the trained adaptive
    stage in inference form and the packed replay memory."""
    if encoder.stage is None or encoder.quantizer is None:
        return None, "the device half runs the INT8 frozen stage with Q-bit latents (--bits 1..8)"
    from tinycl.export.deployment import make_deployment
    from tinycl.replay.codecs import PackedCodec

    packed = isinstance(memory.codec, PackedCodec) and len(memory) > 0
    meta = {"model": cfg.model.name, "width": cfg.model.width, "lr_layer": cfg.model.lr_layer, "seed": cfg.seed,
            "recipe": cfg.train.recipe, "strategy": cfg.train.strategy, "frozen_stage_sha256": frozen_digest}
    try:
        dep = make_deployment(encoder.stage, encoder.quantizer, adaptive, (cfg.model.res, cfg.model.res), num_classes,
                              replay_rows=memory.rows[: len(memory)].numpy() if packed else None,
                              replay_labels=memory.labels[: len(memory)].numpy() if packed else None, meta=meta)
    except TinyclError as exc:
        return None, str(exc)
    return dep, None


@dataclass
class StreamState:
    """Where the stream is and what was measured so far: the part of a checkpoint that is not
    the learner."""

    next_batch: int = 0
    history: list[float] = field(default_factory=list)
    per_class_history: list[list[float | None]] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"next_batch": self.next_batch, "history": self.history,
                "per_class_history": self.per_class_history, "seen": self.seen,
                "records": self.records, "elapsed_seconds": self.elapsed_seconds}

    @classmethod
    def from_dict(cls, raw: object, num_batches: int) -> StreamState:
        try:
            state = cls(**raw)  # type: ignore[arg-type]
        except TypeError:
            raise TinyclError("the checkpoint's stream state is malformed") from None
        if not (isinstance(state.next_batch, int) and 0 < state.next_batch <= num_batches
                and len(state.history) == len(state.per_class_history) == len(state.records)):
            raise TinyclError(f"the checkpoint's stream position ({state.next_batch!r}) does not fit a "
                              f"stream of {num_batches} batches")
        return state


@dataclass
class Checkpointing:
    """Checkpoint policy of a run: write to ``path`` after every ``every`` batches (0: never);
    ``resume`` is a verified checkpoint to continue from."""

    path: Path
    every: int = 0
    resume: dict | None = None


def config_digest(cfg: RunConfig) -> str:
    """What a checkpoint must agree with to be resumed: the config minus where it is written
    and how often it is checkpointed."""
    import hashlib

    from tinycl.config import dump_toml

    return hashlib.sha256(dump_toml(dataclasses.replace(cfg, out="", checkpoint_every=0)).encode()).hexdigest()


def cached_problem(items: np.ndarray, labels: np.ndarray, expected: int, item_shape: tuple[int, ...],
                   item_dtype: np.dtype, num_classes: int) -> str | None:
    """Why cached frozen-stage outputs do not fit this stream (None: they do)."""
    if items.dtype != item_dtype or items.shape != (expected, *item_shape):
        return f"holds {items.dtype} {list(items.shape)}, expected {np.dtype(item_dtype)} {[expected, *item_shape]}"
    if labels.shape != (expected,) or not np.issubdtype(labels.dtype, np.integer):
        return f"holds labels {labels.dtype} {list(labels.shape)}, expected {expected} integers"
    if expected and (labels.min() < 0 or labels.max() >= num_classes):
        return f"holds labels outside 0..{num_classes - 1}"
    return None


def check_finite_latents(latents: torch.Tensor, where: str) -> None:
    if latents.is_floating_point() and not bool(torch.isfinite(latents).all()):
        bad = int((~torch.isfinite(latents)).sum())
        raise NonFiniteError(f"the frozen stage's output for {where} holds {bad} NaN/Inf values "
                             f"(are the weights finite?): training stopped")


def run_experiment(cfg: RunConfig, events: Events | None = None,
                   checkpointing: Checkpointing | None = None) -> dict:
    """Run ``cfg`` end to end and return its summary (DESIGN.md's summary.json contract).

    With ``checkpointing`` the learner and stream state are saved after every k-th batch
    and a run continues from ``checkpointing.resume``; resumed or not, the summary is the
    same (wall times aside).
    """
    from tinycl.train.checkpoint import save_checkpoint

    validate(cfg)
    events = events or Events()
    started = time.perf_counter()
    data = load_data(cfg, events)
    source = data.source
    if source.note:
        events.notes.append(source.note)
    if source.res != cfg.model.res:
        raise TinyclError(f"images are {source.res}x{source.res}, the model expects --res {cfg.model.res}: pass "
                          f"--res {source.res} (a backbone of that size is pretrained on first use unless it ships "
                          f"or you give --weights), or --resize to scale the images to {cfg.model.res} px")
    model = build_model(cfg, data, events)
    t, r = cfg.train, cfg.replay
    frozen, adaptive = prepare_stages(model, cfg.model.lr_layer, t.norm, momentum=t.brn_momentum,
                                      ramp_per_sample=t.brn_ramp, stats=t.brn_stats)
    if events.on_stages:
        events.on_stages(frozen, adaptive)
    frozen_digest = state_digest(frozen)
    if t.sparse:
        from tinycl.config import parse_sparse_spec
        from tinycl.train.sparse import SparseUpdateConfig, sparsify

        names = model.layer_names()[cfg.model.lr_layer + 1 :] if hasattr(model, "layer_names") else None
        spec = parse_sparse_spec(t.sparse)
        policy = "fixed" if spec.fixed else t.sparse_policy
        sparsify(adaptive, SparseUpdateConfig(ratios=spec.ratios, policy=policy, bias_only=spec.bias_only,
                                              fixed=spec.fixed, seed=cfg.seed),
                 first_index=cfg.model.lr_layer + 1, layer_names=names)
    table = layer_table(model, cfg.model.res)
    latent_values = table[cfg.model.lr_layer].out_values
    latent_shape = table[cfg.model.lr_layer].out_shape

    q = cfg.quant
    first_images, first_labels = source.batch(0)
    calibrating = phase_reporter(events, f"preparing the {'INT8' if r.bits != 32 or q.frozen == 'int8' else 'float'} "
                                         "frozen stage (calibration on batch 0)")
    if calibrating:
        calibrating(0, 1, f"{len(first_images)} images")
    encoder = LatentEncoder(
        frozen, latent_shape, r.bits, arithmetic=q.frozen, calib_images=first_images,
        weight_quant=q.weight_quant, observer=q.observer, latent_mode=q.latent_mode,
        latent_per_channel=q.latent_per_channel,
    )
    if calibrating:
        calibrating(1, 1)
    device = resolve_device(t.device)
    if encoder.arithmetic == "float":
        frozen.to(device)  # the INT8 stage keeps its exact CPU path
    cache = open_latent_cache(cfg, frozen, encoder, data.fingerprint, device) if t.strategy != "raw-replay" else None

    item_shape, item_dtype = encoder.item_layout()

    def encoded(name: str, where: str, get_images, expected: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray,
                                                                            np.ndarray | None]:
        """(latents, memory items, labels, images or None when served from the cache). Cached
        items pass the stream boundary's checks too (count, shape, dtype, labels in range)."""
        hit = cache.load(name) if cache else None
        if hit is not None:
            problem = cached_problem(hit[0], hit[1], expected, item_shape, item_dtype, source.num_classes)
            if problem is None:
                items = torch.from_numpy(hit[0])
                return encoder.from_items(items), items, hit[1], None
            cache.reject(name, problem)
        images, labels_np = get_images()
        latents, items = encoder.encode(images)
        check_finite_latents(latents, where)
        if cache:
            cache.store(name, items.numpy(), labels_np)
        return latents, items, labels_np, images

    def all_test_images() -> tuple[np.ndarray, np.ndarray]:
        parts = list(source.test_chunks())
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    # Test latents: the frozen stage never changes, so they are computed once.
    encoding = phase_reporter(events, "encoding the test set (images)") or (lambda *a: None)
    encoding(0, source.test_images)
    if cache:
        test_latents, _, test_labels, _ = encoded("test", "the test set", all_test_images, source.test_images)
        encoding(source.test_images, source.test_images)
    else:  # chunk by chunk, never holding every test image
        test_parts = []
        for x, y in source.test_chunks():
            test_parts.append((encoder.encode(x)[0], y))
            encoding(sum(len(p[1]) for p in test_parts), source.test_images)
        test_latents = torch.cat([p[0] for p in test_parts])
        check_finite_latents(test_latents, "the test set")
        test_labels = np.concatenate([p[1] for p in test_parts])
    capacity = 0 if t.strategy in ("naive", "joint") else r.replays
    codec = encoder.codec
    decoder = None
    if t.strategy == "raw-replay":
        # Raw-image replay at equal bytes: as many images as fit in the latents' budget.
        codec = RawImageCodec(cfg.model.res * cfg.model.res * 3)
        capacity = r.replays * encoder.codec.row_bytes // codec.row_bytes

        def decoder(rows: torch.Tensor) -> torch.Tensor:
            return encoder.encode(rows.view(-1, cfg.model.res, cfg.model.res, 3).numpy())[0]

    num_classes = source.num_classes
    memory = LatentReplayMemory(capacity, codec, num_classes, r.policy)
    learner = Learner(
        adaptive, memory, lr=t.lr, inc_lr=t.inc_lr, momentum=t.momentum,
        weight_decay=t.weight_decay, epochs=t.joint_epochs if t.strategy == "joint" else t.epochs,
        minibatch=t.minibatch, norm=t.norm,
        cwr=t.cwr, num_classes=num_classes, seed=cfg.seed, shuffle=t.shuffle, replay_order=t.replay_order,
        pad_first_batch=t.pad_first_batch, reset_sgd=t.reset_sgd,
        brn_inc_momentum=t.brn_inc_momentum if t.norm == "brn" else None, replay_decoder=decoder, device=device,
    )
    state = StreamState()
    digest = config_digest(cfg)
    if checkpointing and checkpointing.resume is not None:
        resumed = checkpointing.resume
        if resumed.get("config_digest") != digest:
            raise TinyclError(f"checkpoint {checkpointing.path} was written by another configuration "
                              "than this run's config.toml")
        state = StreamState.from_dict(resumed.get("stream"), source.num_batches)
        learner.load_state_dict(resumed.get("learner") or {})
        try:
            torch.set_rng_state(resumed["torch_rng"])
        except (KeyError, TypeError, RuntimeError):
            raise TinyclError(f"checkpoint {checkpointing.path} has no valid torch RNG state") from None
        events.notes.append(f"resumed from {checkpointing.path} after batch {state.next_batch - 1}")
    if events.on_start:
        events.on_start(source.num_batches, state.records)
    seen = set(state.seen)
    pending = (first_images, first_labels) if state.next_batch == 0 else None
    del first_images, first_labels

    saved_after: list[int] = [state.next_batch - 1] if state.next_batch else []

    def save(next_batch: int, summary: dict | None = None) -> None:
        assert checkpointing is not None
        saved_after.append(next_batch - 1)
        stream = dataclasses.replace(state, next_batch=next_batch, seen=sorted(seen),
                                     elapsed_seconds=state.elapsed_seconds + time.perf_counter() - started)
        save_checkpoint(checkpointing.path, {
            "config_digest": digest, "stream": stream.to_dict(), "learner": learner.state_dict(),
            "torch_rng": torch.get_rng_state(), "summary": summary,
        })

    def train_stream(start: int) -> None:
        nonlocal pending
        for index in range(start, source.num_batches):
            batch_start = time.perf_counter()
            # Batch 0 was decoded for calibration already; later batches are decoded as they come.
            first, pending = pending, None
            latents, items, labels_np, images = encoded(
                f"batch_{index:04d}", f"batch {index}",
                lambda i=index, f=first: f if f is not None else source.batch(i), source.batch_sizes[index])
            labels = torch.from_numpy(labels_np)
            seen.update(labels.tolist())
            stats = learner.train_experience(
                latents, labels, index,
                memory_items=torch.from_numpy(images) if images is not None and t.strategy == "raw-replay" else items,
            )
            last = index == source.num_batches - 1
            if index % cfg.eval.every == 0 or last:
                preds = learner.predict(test_latents).numpy()
                acc = accuracy(preds, test_labels)
                per_class = per_class_accuracy(preds, test_labels, num_classes)
                state.history.append(acc)
                state.per_class_history.append(per_class)
                record = {
                    "batch": index, "accuracy": acc, "classes_seen": len(seen),
                    "new_samples": len(labels), "replays_in_memory": len(memory),
                    "loss": stats.mean_loss, "steps": stats.steps,
                    "wall_seconds_batch": time.perf_counter() - batch_start, "per_class": per_class,
                }
                state.records.append(record)
                if events.on_eval:
                    events.on_eval(record)
            if checkpointing and checkpointing.every and (index + 1) % checkpointing.every == 0 and not last:
                save(index + 1)

    try:
        train_stream(state.next_batch)
    except NonFiniteError as exc:
        if checkpointing and saved_after:
            raise NonFiniteError(f"{exc}; the last checkpoint, after batch {saved_after[-1]}, is intact: "
                                 f"{checkpointing.path}") from None
        raise
    if cache and cache.hits:
        events.notes.append(f"frozen-stage outputs reused from {cache.folder} ({cache.hits} files)")
    fidelity = None
    if encoder.stage is not None and cfg.eval.fidelity:
        checking = phase_reporter(events, "fidelity check (INT8 vs float frozen stage)") or (lambda *a: None)
        checking(0, 1)
        fidelity = frozen_fidelity(frozen, adaptive, encoder.stage, source)
        checking(1, 1)
    if state_digest(frozen) != frozen_digest:  # FrozenStage makes this impossible; checked anyway
        raise RuntimeError("the frozen stage changed during the run")
    deployment, not_deployable = deployment_of(cfg, encoder, adaptive, memory, num_classes, frozen_digest)
    if deployment is not None and events.on_deployment:
        events.on_deployment(deployment)
    history = state.history
    summary = {
        "fidelity": fidelity,
        "model": cfg.model.name, "width": cfg.model.width, "res": cfg.model.res,
        "lr_layer": cfg.model.lr_layer, "latent_shape": list(latent_shape),
        "latent_values": latent_values, "benchmark": cfg.data.benchmark,
        "scenario": cfg.data.scenario, "run": cfg.data.run, "strategy": t.strategy,
        "num_batches": source.num_batches, "seed": cfg.seed, "replays": capacity, "replays_used": len(memory),
        "recipe": t.recipe, "recipe_overrides": recipe_overrides(cfg), "frozen_stage_sha256": frozen_digest,
        "device": device,
        "replay_policy": r.policy, "lr_bits": codec.bits, "frozen_arithmetic": encoder.arithmetic,
        "observer": q.observer, "weight_quant": q.weight_quant, "latent_mode": q.latent_mode,
        "latent_per_channel": q.latent_per_channel,
        "lr_memory_bytes": memory.latent_bytes, "lr_label_bytes": memory.label_bytes,
        "lr_label_bytes_each": memory.labels.element_size(),
        "final_accuracy": history[-1], "average_accuracy": average_accuracy(history),
        "forgetting": forgetting(state.per_class_history),
        "per_class_accuracy": state.per_class_history[-1], "num_classes": num_classes,
        "train_images": source.train_images, "test_images": source.test_images, "data_note": source.note,
        "wall_seconds": state.elapsed_seconds + time.perf_counter() - started,
        "deployable": deployment is not None, "not_deployable_because": not_deployable,
    }
    if checkpointing and checkpointing.every:
        # The last checkpoint holds the summary: a run killed while its outputs are written
        # is finished by --resume without training again.
        save(source.num_batches, summary)
    return summary
