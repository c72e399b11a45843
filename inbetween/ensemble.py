"""Train M alpha-VAEs of one architecture on one batch stream as one batched network in one process.

The members of an ensemble share everything that shapes the computation: the dataset, gaps, image
size, width, latent size, batch size, step budget, lr, dtype and the batch order (one *data seed*).
Each member has its own alpha, KL form and *model seed*; the model seed seeds its initial weights
exactly as inbetween.train.build_model does and its own sampling-noise generator exactly as
inbetween.train.train does, so member i equals `train(configs[i])` run alone whenever the data seed
equals its seed (and otherwise a sequential run whose batch order is drawn from the data seed).

What is per member: weights, Adam moments (one fused Adam over the stacked tensors is elementwise, so
it is M Adams), the noise generator, the loss and its log, and validation selection, which is
inbetween.train's own (its _select, evaluate and Selection on the val split; best.pt, val.csv,
summary.json), so a member's out_dir reads exactly like a train() run's. A member that stops early
leaves the batched network (the stacks are rebuilt without it), so its weights no longer change and
the others run faster.

Equality with the sequential loop is within float rounding, not bit for bit: the shared first
convolution (M times the filters in one call) and the batched linear layers (baddbmm, not addmm)
sum in another order than one model's layers. tests/test_ensemble.py states the tolerance.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.flops import epoch_accounting, steps_for_budget
from ibutil.run import write_summary
from ibutil.io import torch_save_atomic
from ibutil.preempt import Preempted, StopFlag
from ibutil.selection import Selection
from inbetween.data import TripletDataset
from inbetween.train import (BEST_NAME, CHECKPOINT_NAME, DTYPES, LOG_COLUMNS, LOG_NAME, NO_VAL, RESUMABLE_CHANGES, TERMS,
                             VAL_LOG_NAME, NonFiniteLoss, TrainConfig, _accumulate, _config_from_json, _fresh_run,
                             _select, _start_val_log, _summary, _zero_sums, build_model, epoch_test, flops_per_step,
                             load_checkpoint, make_optimizer, package_version, save_checkpoint, val_dataset)
from inbetween.vae import AlphaVAE, LossTerms, VAEConfig, loss_terms, num_params

ENSEMBLE_FORMAT = "inbetween-alpha-vae-ensemble-checkpoint"
ENSEMBLE_CHECKPOINT = "ensemble.pt"
MEMBER_FIELDS = ("alpha", "kl_form", "seed", "out_dir")  # what may differ between members


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
    generator: torch.Generator  # its sampling noise, seeded as inbetween.train seeds a single run's
    epoch_sums: dict  # inbetween.train's running sums of the epoch's loss terms
    run: dict  # inbetween.train's run state: selection, train_seconds (its share), stopped_early
    status: str = "training"  # training, stopped-early (left the stack), finished, nonfinite (left the stack)
    end_step: int = 0  # the step it left the stack or the run ended at


def _member_loss(x, logits, mu, logvar, config: TrainConfig, generator) -> LossTerms:
    return loss_terms(x, logits, mu, logvar, config.alpha, config.kl_form, config.likelihood, generator,
                      config.mixture_samples)


def _autocast(device: torch.device, dtype: str):
    amp = DTYPES[dtype]
    return torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None)


# ----------------------------------------------------------------------------- the loop


def train_ensemble(configs: Sequence[TrainConfig], out_dir: str | Path, data_seed: int | None = None) -> list[AlphaVAE]:
    """Train the models of `configs` as one ensemble; returns each member's selected model (eval mode).

    configs: TrainConfigs that differ only in alpha, kl_form, seed (the model seed) and out_dir.
    out_dir: the ensemble's own folder (ensemble.pt, the checkpoint of the whole ensemble).
    data_seed: seeds the batch order, shared by all members; None means the members' common seed
        (then each member equals inbetween.train.train of its config, within rounding).

    Selection is inbetween.train's, per member: every eval_every steps (and at the last step) the
    member's val_split loss (inbetween.train.evaluate, fixed noise) goes into its own Selection; a new
    best is written to its best.pt and logged to its val.csv; a member out of patience stops early
    and leaves the stack (its weights freeze, the others go on). Each member's out_dir ends up as a
    train() run's: log.csv, val.csv, best.pt, checkpoint.pt and summary.json (status finished or
    stopped-early; train_flops the member's own steps, train_seconds its share of the wall time).
    Resuming (every config has resume=True) continues from out_dir/ensemble.pt exactly.
    Preemption: SIGTERM or SIGINT lets the current step finish, writes ensemble.pt and each training
    member's summary.json (preempted) and raises ibutil.preempt.Preempted.
    A member whose loss turns NaN or inf leaves before that update; the others train on, then
    NonFiniteLoss is raised naming it.
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
    test_set = TripletDataset(shared.data, "test", shared.gaps) if any(c.log_test for c in configs) else None
    val_set = val_dataset(shared.data, shared.val_split, shared.gaps)  # None: no selection (val_split "none")
    out = Path(out_dir)
    ckpt_path = out / ENSEMBLE_CHECKPOINT
    for path in [out] + [Path(c.out_dir) for c in configs]:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {path}: {exc.strerror}") from None

    # Steps and FLOPs as inbetween.train counts them, per member (a member's share is its own steps).
    size, n, bs = train_set.image_size, len(train_set), shared.batch_size
    steps_per_epoch = math.ceil(n / bs)
    accounting, epochs, totals = [], [], []
    for c in configs:
        flops = flops_per_step(c, size)
        epochs.append(epoch_accounting(lambda b, c=c: flops_per_step(replace(c, batch_size=b), size), n, bs))
        if c.budget_gflop is not None:
            totals.append(steps_for_budget(c.budget_gflop, flops, "the alpha-VAE", **epochs[-1]))
        else:
            totals.append(c.steps if c.steps is not None else c.epochs * steps_per_epoch)
        accounting.append({"flops_per_step": flops, "planned_steps": totals[-1]})
    if len(set(totals)) > 1:
        raise UserError(f"budget_gflop buys the members different step counts ({totals}); train them as "
                        "separate ensembles or give steps")
    total = totals[0]

    vae_config = VAEConfig(image_size=size, latent=shared.latent, width=shared.width)
    members = [Member(c, torch.Generator(device=device).manual_seed(c.seed), _zero_sums(), _fresh_run(c))
               for c in configs]
    step = 0
    busy = [p for c in configs for p in (Path(c.out_dir) / CHECKPOINT_NAME, Path(c.out_dir) / LOG_NAME) if p.exists()]
    if (ckpt_path.exists() or busy) and not all(c.resume for c in configs):
        held = ckpt_path if ckpt_path.exists() else busy[0]
        raise UserError(f"{held} already exists; pass resume=True to continue the ensemble or choose other folders")
    if ckpt_path.exists():
        stack, optimizer, step, active = _restore(ckpt_path, configs, data_seed, members, vae_config, device)
    else:
        stack = StackedVAE.from_states(vae_config, [build_model(c, size).state_dict() for c in configs], device)
        optimizer = _adam(stack, shared.lr)
        active = list(range(len(members)))  # members in the stack, in stack order
    selections = [Selection.from_state(m.run["selection"]) for m in members]
    probe = AlphaVAE(vae_config).to(device)  # one member's weights at a time, for inbetween.train's evaluation
    for a in accounting:
        a["params"] = num_params(probe)
    for j, m in enumerate(members):
        folder = Path(m.config.out_dir)
        if not (folder / LOG_NAME).exists():
            with open(folder / LOG_NAME, "w", newline="") as fh:
                csv.writer(fh).writerow(LOG_COLUMNS)
        if val_set is not None and j in active:
            _start_val_log(folder / VAL_LOG_NAME, step)

    def member_model(r: int) -> AlphaVAE:
        """The probe holding stack row r's current weights."""
        probe.load_state_dict(stack.member_state(r))
        return probe

    def charge() -> None:
        """Split the wall time since the last call evenly over the members that trained in it."""
        nonlocal t_last
        now = time.perf_counter()
        for j in active:
            members[j].run["train_seconds"] += (now - t_last) / len(active)
        t_last = now

    def summary(j: int, status: str) -> dict:
        members[j].run["selection"] = selections[j].state_dict()
        return _summary(members[j].config, members[j].run, accounting[j], epochs[j], members[j].end_step, status)

    def log_epoch_row(r: int, j: int) -> None:
        """inbetween.train's end-of-epoch log.csv row for stack row r (member j): train sums, test loss."""
        m = members[j]
        test = epoch_test(member_model(r), test_set, m.config, device)
        s = m.epoch_sums
        row = [f"{step / steps_per_epoch:.4g}", step] + [s[k] / max(s["n"], 1) for k in TERMS] + \
              [test[k] for k in TERMS] + [s["data_s"] / max(s["step_s"], 1e-12), f"{time.perf_counter() - t_epoch:.2f}"]
        with open(Path(m.config.out_dir) / LOG_NAME, "a", newline="") as fh:
            csv.writer(fh).writerow(row)
        m.epoch_sums = _zero_sums()

    def write_member(r: int, j: int, status: str) -> None:
        """Member j's checkpoint.pt (an inbetween.train checkpoint of stack row r) and summary.json."""
        m = members[j]
        m.end_step = step
        model = member_model(r)
        adam = make_optimizer(model, m.config)
        adam.load_state_dict(_member_optimizer_state(optimizer, stack, r))
        record = summary(j, status)
        save_checkpoint(Path(m.config.out_dir) / CHECKPOINT_NAME, model, adam, m.config, step,
                        [m.generator.get_state()], m.epoch_sums, m.run, record)
        write_summary(record, m.config.out_dir)

    def leave(rows_out: list[int], status: str) -> None:
        """Take members (rows of the stack) out of the stack and the optimizer."""
        nonlocal optimizer
        charge()
        for r in rows_out:
            j = active[r]
            members[j].status, members[j].end_step = status, step
            if status == "stopped-early":  # as inbetween.train ends a run: the epoch's log row, checkpoint, summary
                log_epoch_row(r, j)
                write_member(r, j, status)
        keep = [r for r in range(len(active)) if r not in rows_out]
        active[:] = [active[r] for r in keep]
        if keep:
            optimizer = _keep_rows(optimizer, stack, keep)

    def save() -> None:
        charge()
        for j, sel in enumerate(selections):
            members[j].run["selection"] = sel.state_dict()
        _save(ckpt_path, configs, data_seed, members, active, stack, optimizer, step)

    bar = tqdm(total=total, initial=min(step, total), unit="step", desc=f"ensemble x{len(members)}", leave=False,
               disable=not shared.progress)
    t_epoch = t_last = time.perf_counter()  # seconds count from here, as in inbetween.train
    with StopFlag() as stop:
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
                preempt = stop.requested  # read once, as inbetween.train: a later signal is acted on next step
                bad = [r for r, v in enumerate(values) if not math.isfinite(v[0])]
                if bad:  # as inbetween.train refuses the update: those members leave, the others redo the step
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
                    save()
                if val_set is not None and (step % shared.eval_every == 0 or step == total):
                    # inbetween.train's own selection step, per member: val loss, best.pt, val.csv, patience.
                    done = [r for r, j in enumerate(active)
                            if _select(member_model(r), val_set, members[j].config, device, selections[j], step,
                                       Path(members[j].config.out_dir), 0, 1)]
                    for r in done:
                        members[active[r]].run["stopped_early"] = True
                    if done:
                        leave(done, "stopped-early")
                if preempt and step < total and active:  # else the run ends normally now
                    bar.close()
                    save()
                    for j in active:
                        members[j].end_step = step
                        write_summary(summary(j, "preempted"), members[j].config.out_dir)
                    raise Preempted(stop.signum or signal.SIGTERM, step, ckpt_path)
                if step == total:
                    break
            # End of an epoch (or of a steps-limited run): inbetween.train's log row per training member.
            for r, j in enumerate(active):
                log_epoch_row(r, j)
            t_epoch = time.perf_counter()
            save()
    bar.close()
    # The members still in the stack ran to the end; they stay in ensemble.pt, so a longer budget resumes them.
    charge()
    for r, j in enumerate(active):
        members[j].status = "finished"
        write_member(r, j, "finished")
    save()
    nonfinite = [m.config.out_dir for m in members if m.status == "nonfinite"]
    if nonfinite:
        raise NonFiniteLoss(f"the loss of member(s) {', '.join(nonfinite)} became NaN or inf; they stopped before "
                            "that update (the others finished); train them with a lower lr or dtype='fp32'")
    return [_selected(m, device) for m in members]


def _selected(m: Member, device: torch.device) -> AlphaVAE:
    """Member m's selected model, as inbetween.train returns it: best.pt, or the last step without selection."""
    folder = Path(m.config.out_dir)
    chosen = m.config.val_split != NO_VAL and m.run["selection"]["best_step"] is not None
    return load_checkpoint(folder / (BEST_NAME if chosen else CHECKPOINT_NAME), device)


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


def _save(path: Path, configs, data_seed, members, active, stack, optimizer, step) -> None:
    """The whole ensemble, atomically: the stack of training members, their Adam, every member's state."""
    torch_save_atomic({
        "format": ENSEMBLE_FORMAT, "version": package_version(), "step": step, "data_seed": data_seed,
        "configs": [json.dumps(asdict(c), sort_keys=True) for c in configs], "active": list(active),
        "stack": {k: v.detach() for k, v in stack.params.items()}, "optimizer": optimizer.state_dict(),
        "members": [{"generator": m.generator.get_state(), "epoch_sums": m.epoch_sums, "run": m.run,
                     "status": m.status, "end_step": m.end_step} for m in members],
    }, path)


def _restore(path: Path, configs, data_seed, members, vae_config, device):
    """Load ensemble.pt into `members`; returns (stack, optimizer, step, active). UserError if another ensemble's."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise UserError(f"{path} is not a readable ensemble checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != ENSEMBLE_FORMAT or "run" not in state["members"][0]:
        raise UserError(f"{path} is not an ensemble checkpoint written by this inbetween.ensemble; "
                        "train the ensemble again in another out_dir")
    saved = [_config_from_json(c) for c in state["configs"]]
    ours = [asdict(c) for c in configs]
    # A field the checkpoint's release did not have yet counts as its default.
    same = len(saved) == len(ours) and all(
        s.get(f.name, f.default) == o[f.name] for s, o in zip(saved, ours) for f in fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES)
    if not same or state["data_seed"] != data_seed:
        raise UserError(f"cannot resume {path}: it holds another ensemble (members or data_seed differ); "
                        "use the same settings or another out_dir")
    for m, s in zip(members, state["members"]):
        m.generator.set_state(s["generator"].cpu())
        m.epoch_sums, m.run, m.status, m.end_step = s["epoch_sums"], s["run"], s["status"], s["end_step"]
    active = list(state["active"])
    for j in active:
        members[j].status = "training"  # a finished member goes on when the budget grew
    stack = StackedVAE(vae_config, {k: v.clone().requires_grad_() for k, v in state["stack"].items()})
    optimizer = _adam(stack, configs[0].lr)
    optimizer.load_state_dict(state["optimizer"])
    return stack, optimizer, state["step"], active
