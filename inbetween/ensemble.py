"""Train M alpha-VAEs of one architecture on one batch stream as one batched network in one process.

The members of an ensemble share everything that shapes the computation: the dataset, gaps, image
size, width, latent size, batch size, step budget, lr, dtype and the batch order (one *data seed*).
Each member has its own alpha, KL form and *model seed*; the model seed seeds its initial weights
exactly as inbetween.train.build_model does and its own sampling-noise generator exactly as
inbetween.train.train does, so member i equals `train(configs[i])` run alone whenever the data seed
equals its seed (and otherwise a sequential run whose batch order is drawn from the data seed).

What is per member: weights, Adam moments (one fused Adam over the stacked tensors is elementwise, so
it is M Adams), the noise generator, the loss and its log, and early stopping (periodic validation
loss, best state, patience). A member that stops leaves the batched network (the stacks are rebuilt
without it), so its weights no longer change and the others run faster.

Equality with the sequential loop is within float rounding, not bit for bit: the shared first
convolution (M times the filters in one call) and the batched linear layers (baddbmm, not addmm)
sum in another order than one model's layers. tests/test_ensemble.py states the tolerance.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inbetween.data import TripletDataset
from inbetween.train import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, DTYPES, LOG_COLUMNS, LOG_NAME, TERMS, TrainConfig,
                             _accumulate, _config_from_json, _zero_sums, build_model, package_version)
from inbetween.vae import AlphaVAE, LossTerms, VAEConfig, loss_terms
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import torch_save_atomic

ENSEMBLE_FORMAT = "inbetween-alpha-vae-ensemble-checkpoint"
ENSEMBLE_CHECKPOINT = "ensemble.pt"
ENSEMBLE_LOG = "ensemble.csv"  # one row per member and validation: step, val loss, best, status
MEMBER_FIELDS = ("alpha", "kl_form", "seed", "out_dir")  # what may differ between members
# Fields that say how long, how loudly and where to train; they may change on resume (as in inbetween.train).
RESUMABLE_CHANGES = ("epochs", "steps", "resume", "progress", "checkpoint_every", "out_dir")
ENSEMBLE_LOG_COLUMNS = ("step", "member", "alpha", "kl_form", "seed", "val_loss", "best_val_loss", "best_step",
                        "status")


@dataclass(frozen=True)
class EarlyStopping:
    """Per-member early stopping on a validation set held out of the training split."""

    every: int = 100  # validate every this many steps
    patience: int = 5  # a member stops after this many validations without a new best
    val_sequences: int = 1  # the last this many training sequences are held out (never the test split)
    min_delta: float = 0.0  # a new best must beat the old by more than this (nats per triplet)

    def __post_init__(self):
        for name in ("every", "patience", "val_sequences"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"early stopping {name} must be a positive integer, got {value!r}")
        if not isinstance(self.min_delta, (int, float)) or not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise UserError(f"early stopping min_delta must be a finite number >= 0, got {self.min_delta!r}")


def shared_key(config: TrainConfig) -> tuple:
    """What members of one ensemble must share: every TrainConfig field but MEMBER_FIELDS and progress.

    Group a sweep's configs by this key; each group can train as one ensemble.
    """
    return tuple((f.name, getattr(config, f.name)) for f in fields(TrainConfig)
                 if f.name not in MEMBER_FIELDS + ("progress", "resume", "checkpoint_every"))


def check_members(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    """The configs as a list; UserError unless they can train together."""
    configs = list(configs)
    if not configs:
        raise UserError("an ensemble needs at least one TrainConfig")
    key = shared_key(configs[0])
    for c in configs[1:]:
        if shared_key(c) != key:
            diff = [a for (a, x), (_, y) in zip(key, shared_key(c)) if x != y]
            raise UserError(f"ensemble members must share everything but {', '.join(MEMBER_FIELDS)}; "
                            f"these differ: {', '.join(diff)}")
    dirs = [str(Path(c.out_dir).resolve()) for c in configs]
    if len(set(dirs)) != len(dirs):
        raise UserError("ensemble members need distinct out_dir folders")
    return configs


def hold_out(dataset: TripletDataset, val_sequences: int) -> tuple[TripletDataset, TripletDataset]:
    """(train, val): the triplets of the first S - V sequences and of the last V (V = val_sequences)."""
    if val_sequences >= dataset.n_seq:
        raise UserError(f"cannot hold out {val_sequences} validation sequence(s) of the {dataset.n_seq} training "
                        "sequences; render more or lower val_sequences")
    cut = dataset.n_seq - val_sequences
    train, val = copy.copy(dataset), copy.copy(dataset)
    train.index = dataset.index[dataset.index[:, 0] < cut]  # (N_train, 3): s, t, k
    val.index = dataset.index[dataset.index[:, 0] >= cut]
    return train, val


# ----------------------------------------------------------------------------- the batched network


class StackedVAE:
    """M AlphaVAEs of one VAEConfig as leaf tensors (M, ...) keyed like AlphaVAE.state_dict().

    The forward pass: the first convolution (all members see the same images) is one conv with M
    times the filters; the linear layers are batched matrix products; the other convolutions run per
    member with PyTorch's own kernels (the decoder's channels last). Grouped convolutions, vmap and
    batched im2col GEMMs were all measured slower on the 2-core CPU (docs/scale.md).
    """

    def __init__(self, config: VAEConfig, params: dict[str, torch.Tensor]):
        self.config = config
        self.params = params  # name -> (M, ...) leaf tensor requiring grad
        self.n_convs = sum(1 for k in params if k.startswith("encoder.convs.") and k.endswith(".weight"))
        self.n_deconvs = sum(1 for k in params if k.startswith("decoder.deconvs.") and k.endswith(".weight"))

    @classmethod
    def from_states(cls, config: VAEConfig, states: Sequence[dict], device) -> "StackedVAE":
        params = {k: torch.stack([s[k] for s in states]).to(device).requires_grad_() for k in states[0]}
        return cls(config, params)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as an AlphaVAE state_dict (detached copies)."""
        return {k: v[i].detach().clone() for k, v in self.params.items()}

    def keep(self, rows: list[int]) -> None:
        """Drop every member not in `rows` (rows index the current stack)."""
        self.params = {k: v.detach()[rows].clone().requires_grad_() for k, v in self.params.items()}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3, H, W) in [0, 1], the same for every member -> mu, logvar (M, N, L) in fp32."""
        p, m, n = self.params, self.size, x.shape[0]
        # The first conv sees the same images for every member: one conv with M times the filters.
        w, b = p["encoder.convs.0.weight"], p["encoder.convs.0.bias"]  # (M, Co, 3, 4, 4), (M, Co)
        h = F.relu(F.conv2d(x, w.flatten(0, 1), b.flatten(), stride=2, padding=1))  # (N, M*Co, H/2, W/2)
        outs = []
        for j, hj in enumerate(h.view(n, m, -1, *h.shape[2:]).unbind(1)):  # member j: (N, Co, H/2, W/2)
            hj = hj.contiguous()
            for i in range(1, self.n_convs):
                hj = F.relu(F.conv2d(hj, p[f"encoder.convs.{2 * i}.weight"][j], p[f"encoder.convs.{2 * i}.bias"][j],
                                     stride=2, padding=1))
            outs.append(hj.flatten(1))
        h = torch.stack(outs)  # (M, N, C*2*2)
        with torch.autocast(device_type=x.device.type, enabled=False):  # fp32 heads, as in AlphaVAE
            h = h.float()
            return self._linear(h, "encoder.mu"), self._linear(h, "encoder.logvar")

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (M, N, L) -> logits (M, N, 3, H, W) in fp32."""
        p, m, n = self.params, self.size, z.shape[1]
        h = F.relu(self._linear(z, "decoder.fc"))  # (M, N, C0*2*2)
        outs = []
        for j, hj in enumerate(h.reshape(m, n, -1, 2, 2).unbind(0)):  # member j: (N, C0, 2, 2)
            # Channels last: oneDNN's transposed convs are fast in that layout (PyTorch's default NCHW
            # transposed conv was up to ~4x slower on the 32x32 layer here).
            hj = hj.contiguous(memory_format=torch.channels_last)
            for i in range(self.n_deconvs):
                hj = F.relu(F.conv_transpose2d(hj, p[f"decoder.deconvs.{2 * i}.weight"][j],
                                               p[f"decoder.deconvs.{2 * i}.bias"][j], stride=2, padding=1))
            outs.append(F.conv2d(hj, p["decoder.out.weight"][j], p["decoder.out.bias"][j], padding=1).float())
        return torch.stack(outs)  # (M, N, 3, H, W)

    def _linear(self, h: torch.Tensor, name: str) -> torch.Tensor:
        """Member-wise nn.Linear: h (M, N, in) -> (M, N, out)."""
        w, b = self.params[f"{name}.weight"], self.params[f"{name}.bias"]  # (M, out, in), (M, out)
        return torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))

    def __call__(self, x: torch.Tensor, generators: Sequence[torch.Generator]):
        """Encode, sample z with each member's generator, decode: logits (M, N, 3, H, W), mu, logvar (M, N, L).

        Each generator draws one (N, L) normal tensor, the draw AlphaVAE.forward makes.
        """
        mu, logvar = self.encode(x)
        eps = torch.stack([torch.randn(mu.shape[1:], generator=g, device=mu.device, dtype=mu.dtype)
                           for g in generators])  # (M, N, L)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode_logits(z), mu, logvar


# ----------------------------------------------------------------------------- per-member state


@dataclass
class Member:
    """The mutable training state of one member (its weights live in the stack while it trains)."""

    config: TrainConfig
    generator: torch.Generator
    epoch_sums: dict
    status: str = "training"  # training, stopped (early stopping), nonfinite (loss became NaN/inf), done
    best_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    best_state: dict | None = None  # weights at best_step (early stopping only)
    final_state: dict | None = None  # weights when it left the stack
    final_optimizer: dict | None = None  # its Adam state then (an inbetween.train optimizer state_dict)
    end_step: int = 0


def _member_loss(x, logits, mu, logvar, config: TrainConfig, generator) -> LossTerms:
    return loss_terms(x, logits, mu, logvar, config.alpha, config.kl_form, config.likelihood, generator,
                      config.mixture_samples)


def _autocast(device: torch.device, dtype: str):
    amp = DTYPES[dtype]
    return torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None)


@torch.no_grad()
def evaluate_stack(stack: StackedVAE, members: Sequence[Member], dataset: TripletDataset,
                   device: torch.device) -> list[dict]:
    """inbetween.train.evaluate for every member at once: mean loss terms per triplet, fp32, noise seed+1."""
    gens = [torch.Generator(device=device).manual_seed(m.config.seed + 1) for m in members]
    bs = members[0].config.batch_size
    sums, n = [dict.fromkeys(TERMS, 0.0) for _ in members], 0
    for start in range(0, len(dataset), bs):
        idx = np.arange(start, min(start + bs, len(dataset)))
        b = dataset.batch(idx, device)
        x = torch.cat([b["x0"], b["x1"], b["x2"]])  # (3B, 3, H, W)
        logits, mu, logvar = stack(x, gens)
        terms = [_member_loss(x, logits[j], mu[j], logvar[j], m.config, g)
                 for j, (m, g) in enumerate(zip(members, gens))]
        values = torch.stack([torch.stack([getattr(t, k) for k in TERMS]) for t in terms]).tolist()  # (M, 4)
        for s, v in zip(sums, values):
            for key, value in zip(TERMS, v):
                s[key] += value * len(idx)
        n += len(idx)
    return [{key: value / n for key, value in s.items()} for s in sums]


# ----------------------------------------------------------------------------- the loop


def train_ensemble(configs: Sequence[TrainConfig], out_dir: str | Path, data_seed: int | None = None,
                   stopping: EarlyStopping | None = None) -> list[AlphaVAE]:
    """Train the models of `configs` as one ensemble; returns them (eval mode), each at its best or final state.

    configs: TrainConfigs that differ only in alpha, kl_form, seed (the model seed) and out_dir.
    out_dir: the ensemble's own folder (ensemble.pt, the checkpoint of the whole ensemble; ensemble.csv).
    data_seed: seeds the batch order, shared by all members; None means the members' common seed
        (then each member equals inbetween.train.train of its config, within rounding).
    stopping: early stopping per member on held-out training sequences; None trains every member to the end.

    Each member's out_dir gets log.csv (inbetween.train's columns) and, at the end, an inbetween.train
    checkpoint.pt (its best state under early stopping) with an extra "ensemble" record.
    Resuming (every config has resume=True) continues from out_dir/ensemble.pt exactly.
    """
    configs = check_members(configs)
    shared = configs[0]
    if data_seed is None:
        seeds = {c.seed for c in configs}
        if len(seeds) > 1:
            raise UserError("members with different seeds must share an explicit data_seed (the batch order)")
        data_seed = seeds.pop()
    if not isinstance(data_seed, int) or isinstance(data_seed, bool) or data_seed < 0:
        raise UserError(f"data_seed must be an integer >= 0, got {data_seed!r}")
    device = resolve_device(shared.device)
    if shared.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16; use dtype='fp32'")
    train_set = TripletDataset(shared.data, "train", shared.gaps)
    test_set = TripletDataset(shared.data, "test", shared.gaps)
    val_set = None
    if stopping is not None:
        train_set, val_set = hold_out(train_set, stopping.val_sequences)
    out = Path(out_dir)
    ckpt_path = out / ENSEMBLE_CHECKPOINT
    for path in [out] + [Path(c.out_dir) for c in configs]:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {path}: {exc.strerror}") from None

    vae_config = VAEConfig(image_size=train_set.image_size, latent=shared.latent, width=shared.width)
    members = [Member(c, torch.Generator(device=device).manual_seed(c.seed), _zero_sums()) for c in configs]
    step = 0
    busy = [p for c in configs for p in (Path(c.out_dir) / CHECKPOINT_NAME, Path(c.out_dir) / LOG_NAME) if p.exists()]
    if ckpt_path.exists() or busy:
        if not all(c.resume for c in configs):
            held = ckpt_path if ckpt_path.exists() else busy[0]
            raise UserError(f"{held} already exists; pass resume=True to continue the ensemble or choose other folders")
    if ckpt_path.exists():
        stack, optimizer, step = _restore(ckpt_path, configs, data_seed, stopping, members, vae_config, device)
    else:
        stack = StackedVAE.from_states(vae_config, [build_model(c, vae_config.image_size).state_dict()
                                                    for c in configs], device)
        optimizer = _adam(stack, shared.lr)
    for m in members:
        log = Path(m.config.out_dir) / LOG_NAME
        if not log.exists():
            with open(log, "w", newline="") as fh:
                csv.writer(fh).writerow(LOG_COLUMNS)
    if stopping is not None and not (out / ENSEMBLE_LOG).exists():
        with open(out / ENSEMBLE_LOG, "w", newline="") as fh:
            csv.writer(fh).writerow(ENSEMBLE_LOG_COLUMNS)

    n, bs = len(train_set), shared.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = shared.steps if shared.steps is not None else shared.epochs * steps_per_epoch
    active = [i for i, m in enumerate(members) if m.status == "training"]  # members in the stack, in order
    bar = tqdm(total=total, initial=min(step, total), unit="step", desc=f"ensemble x{len(members)}", leave=False,
               disable=not shared.progress)
    t_epoch = time.perf_counter()

    def leave(rows_out: list[int], status: str) -> None:
        """Take members (positions in `active`) out of the stack and the optimizer."""
        nonlocal optimizer
        for r in rows_out:
            m = members[active[r]]
            m.status, m.end_step = status, step
            m.final_state = stack.member_state(r)
            m.final_optimizer = _member_optimizer_state(optimizer, stack, r)
        keep = [r for r in range(len(active)) if r not in rows_out]
        active[:] = [active[r] for r in keep]
        if keep:
            optimizer = _keep_rows(optimizer, stack, keep)

    while step < total and active:
        epoch, offset = divmod(step, steps_per_epoch)
        order = np.random.default_rng([data_seed, epoch]).permutation(n)  # as inbetween.train, seeded by data_seed
        i = offset
        while i < steps_per_epoch and active:
            t0 = time.perf_counter()
            batch = train_set.batch(order[i * bs:(i + 1) * bs], device)  # x0, x1, x2: (b, 3, H, W) in [0, 1]
            x = torch.cat([batch["x0"], batch["x1"], batch["x2"]])  # (3b, 3, H, W)
            t1 = time.perf_counter()
            gens = [members[j].generator for j in active]
            saved = [g.get_state() for g in gens]  # to replay this step if a member's loss is not finite
            with _autocast(device, shared.dtype):
                logits, mu, logvar = stack(x, gens)
                terms = [_member_loss(x, logits[r], mu[r], logvar[r], members[j].config, members[j].generator)
                         for r, j in enumerate(active)]
            values = torch.stack([torch.stack([getattr(t, k).detach() for k in TERMS]) for t in terms]).tolist()
            bad = [r for r, v in enumerate(values) if not math.isfinite(v[0])]
            if bad:  # as inbetween.train refuses the update: those members stop, the others redo the step
                for g, s in zip(gens, saved):
                    g.set_state(s)
                del logits, mu, logvar, terms
                leave(bad, "nonfinite")
                continue
            optimizer.zero_grad(set_to_none=True)
            torch.stack([t.loss for t in terms]).sum().backward()  # members' weights are disjoint
            optimizer.step()
            step += 1
            i += 1
            t2 = time.perf_counter()
            for r, j in enumerate(active):
                _accumulate(members[j].epoch_sums, dict(zip(TERMS, values[r])), t1 - t0, t2 - t0)
            bar.update(1)
            if shared.checkpoint_every and step % shared.checkpoint_every == 0:
                _save(ckpt_path, configs, data_seed, stopping, members, active, stack, optimizer, step)
            if stopping is not None and step % stopping.every == 0:
                _validate(stack, members, active, val_set, stopping, step, device, out / ENSEMBLE_LOG, leave)
            if step == total:
                break
        # End of an epoch (or of a steps-limited run): test loss per member, as inbetween.train logs it.
        if active:
            tests = evaluate_stack(stack, [members[j] for j in active], test_set, device)
            for j, test in zip(active, tests):
                s = members[j].epoch_sums
                row = [f"{step / steps_per_epoch:.4g}", step] + [s[k] / max(s["n"], 1) for k in TERMS] + \
                      [test[k] for k in TERMS] + \
                      [s["data_s"] / max(s["step_s"], 1e-12), f"{time.perf_counter() - t_epoch:.2f}"]
                with open(Path(members[j].config.out_dir) / LOG_NAME, "a", newline="") as fh:
                    csv.writer(fh).writerow(row)
                members[j].epoch_sums = _zero_sums()
        t_epoch = time.perf_counter()
        _save(ckpt_path, configs, data_seed, stopping, members, active, stack, optimizer, step)
    bar.close()
    for r, j in enumerate(active):  # they stay in the stack (and ensemble.pt), so a longer budget resumes them
        m = members[j]
        m.final_state, m.final_optimizer, m.end_step = stack.member_state(r), _member_optimizer_state(
            optimizer, stack, r), step
    _save(ckpt_path, configs, data_seed, stopping, members, active, stack, optimizer, step)
    return [_finish(m, vae_config, data_seed, stopping) for m in members]


def _validate(stack, members, active, val_set, stopping: EarlyStopping, step: int, device, log_path: Path,
              leave) -> None:
    """Validation loss of every training member; best state, patience; members out of patience leave."""
    losses = [v["loss"] for v in evaluate_stack(stack, [members[j] for j in active], val_set, device)]
    out, rows = [], []
    for r, (j, loss) in enumerate(zip(active, losses)):
        m = members[j]
        if loss < m.best_loss - stopping.min_delta:
            m.best_loss, m.best_step, m.bad_evals, m.best_state = loss, step, 0, stack.member_state(r)
        else:
            m.bad_evals += 1
            if m.bad_evals >= stopping.patience:
                out.append(r)
        rows.append([step, j, m.config.alpha, m.config.kl_form, m.config.seed, loss, m.best_loss, m.best_step,
                     "stopped" if r in out else "training"])
    with open(log_path, "a", newline="") as fh:
        csv.writer(fh).writerows(rows)
    if out:
        leave(out, "stopped")


def _finish(m: Member, vae_config: VAEConfig, data_seed: int, stopping: EarlyStopping | None) -> AlphaVAE:
    """Write member m's inbetween.train checkpoint (best state if it has one) and return that model."""
    state = m.best_state if (stopping is not None and m.best_state is not None) else m.final_state
    model = AlphaVAE(vae_config)
    model.load_state_dict(state)
    record = {"status": "done" if m.status == "training" else m.status, "end_step": m.end_step, "best_step": m.best_step,
              "best_val_loss": m.best_loss if math.isfinite(m.best_loss) else None, "data_seed": data_seed,
              "early_stopping": asdict(stopping) if stopping else None}
    torch_save_atomic({
        "format": CHECKPOINT_FORMAT, "version": package_version(),
        "config": json.dumps(asdict(m.config), sort_keys=True), "model_config": asdict(vae_config),
        "model": model.state_dict(), "optimizer": m.final_optimizer, "step": m.end_step,
        "generator": m.generator.get_state(), "rank_generators": [m.generator.get_state()],
        "epoch_sums": m.epoch_sums, "ensemble": record,
    }, Path(m.config.out_dir) / CHECKPOINT_NAME)
    return model.to(m.generator.device).eval()


# ----------------------------------------------------------------------------- optimizer and checkpoints


def _adam(stack: StackedVAE, lr: float) -> torch.optim.Adam:
    """One fused Adam over the stacked tensors: elementwise, so each member's slice is its own Adam."""
    return torch.optim.Adam(list(stack.params.values()), lr=lr, fused=True)


def _member_optimizer_state(optimizer, stack: StackedVAE, row: int) -> dict:
    """Member `row`'s slice of the stacked Adam as the state_dict of inbetween.train's per-model Adam."""
    full = optimizer.state_dict()
    state = {}
    for i, p in enumerate(stack.params.values()):
        s = optimizer.state.get(p)
        if s:
            state[i] = {k: (v.clone() if k == "step" else v[row].clone()) for k, v in s.items()}
    return {"state": state, "param_groups": full["param_groups"]}


def _keep_rows(optimizer, stack: StackedVAE, rows: list[int]) -> torch.optim.Adam:
    """Shrink the stack and its Adam to `rows`, keeping the moments of those members."""
    old = [optimizer.state.get(p, {}) for p in stack.params.values()]
    stack.keep(rows)
    new = _adam(stack, optimizer.param_groups[0]["lr"])
    for p, s in zip(stack.params.values(), old):
        if s:
            new.state[p] = {k: (v.clone() if k == "step" else v[rows].clone()) for k, v in s.items()}
    return new


def _save(path: Path, configs, data_seed, stopping, members, active, stack, optimizer, step) -> None:
    """The whole ensemble, atomically: the stack of training members, their Adam, every member's state."""
    torch_save_atomic({
        "format": ENSEMBLE_FORMAT, "version": package_version(), "step": step, "data_seed": data_seed,
        "configs": [json.dumps(asdict(c), sort_keys=True) for c in configs],
        "stopping": asdict(stopping) if stopping else None, "active": list(active),
        "stack": {k: v.detach() for k, v in stack.params.items()}, "optimizer": optimizer.state_dict(),
        "members": [{"generator": m.generator.get_state(), "epoch_sums": m.epoch_sums, "status": m.status,
                     "best_loss": m.best_loss, "best_step": m.best_step, "bad_evals": m.bad_evals,
                     "best_state": m.best_state, "final_state": m.final_state,
                     "final_optimizer": m.final_optimizer, "end_step": m.end_step} for m in members],
    }, path)


def _restore(path: Path, configs, data_seed, stopping, members, vae_config, device):
    """Load ensemble.pt into `members`; returns (stack, optimizer, step). UserError if it is another ensemble's."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise UserError(f"{path} is not a readable ensemble checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != ENSEMBLE_FORMAT:
        raise UserError(f"{path} is not an ensemble checkpoint written by inbetween.ensemble")
    saved = [_config_from_json(c) for c in state["configs"]]
    ours = [asdict(c) for c in configs]
    same = len(saved) == len(ours) and all(
        s.get(f.name) == o[f.name] for s, o in zip(saved, ours) for f in fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES)
    if not same or state["data_seed"] != data_seed or state["stopping"] != (asdict(stopping) if stopping else None):
        raise UserError(f"cannot resume {path}: it holds another ensemble (members, data_seed or early stopping "
                        "differ); use the same settings or another out_dir")
    for m, s in zip(members, state["members"]):
        m.generator.set_state(s["generator"].cpu())
        for key in ("epoch_sums", "status", "best_loss", "best_step", "bad_evals", "best_state", "final_state",
                    "final_optimizer", "end_step"):
            setattr(m, key, s[key])
    stack = StackedVAE(vae_config, {k: v.clone().requires_grad_() for k, v in state["stack"].items()})
    optimizer = _adam(stack, configs[0].lr)
    optimizer.load_state_dict(state["optimizer"])
    return stack, optimizer, state["step"]
