"""Tests of inbetween.ensemble: the batched layers, equality with sequential training, early stopping, resume."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inbetween.ensemble import (EarlyStopping, StackedVAE, _conv_cl, _deconv_cl, check_members, shared_key,
                                train_ensemble)
from inbetween.toy import write_toy_dataset
from inbetween.train import TrainConfig, build_model, compute_loss, load_checkpoint, make_optimizer, read_checkpoint, train
from inbetween.data import TripletDataset
from inbetween.vae import AlphaVAE, VAEConfig
from ibutil.errors import UserError

# Equality with the sequential loop, within rounding: a batched GEMM sums in another order than
# M convolutions, and Adam divides by sqrt(v), so an element whose gradient is itself rounding noise
# may take a full step of lr the other way. Hence three bounds after STEPS steps:
RTOL_LOSS = 1e-4  # every logged train / test loss term, relative
ATOL_TYPICAL = 1e-5  # the 99th percentile of |w_ensemble - w_sequential| over all weights
STEPS = 6
LR = 3e-3  # and every |w_ensemble - w_sequential| <= 2 * LR * STEPS, the most two Adam runs can part


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    # 8-frame disk sequences at 16x16: 5 train sequences (30 triplets at gap 1), 2 test sequences.
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy.h5", image_size=16, frames=8, train=5, test=2)


def config(toy, out, **kw):
    # No val split in the toy file: the ensemble trains to the last step, so its reference runs do too.
    base = dict(data=str(toy), out_dir=str(out), width=0.1, latent=4, batch_size=8, lr=LR, steps=STEPS,
                device="cpu", progress=False, val_split="none")
    return TrainConfig(**{**base, **kw})


def read_log(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_close_models(a: AlphaVAE, b: AlphaVAE, steps: int = STEPS):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    diff = torch.cat([(sa[k] - sb[k]).abs().flatten() for k in sa])
    assert diff.quantile(0.99) <= ATOL_TYPICAL
    assert diff.max() <= 2 * LR * steps


def assert_close_logs(a, b):
    ra, rb = read_log(a), read_log(b)
    assert len(ra) == len(rb) >= 1
    for x, y in zip(ra, rb):
        assert x["step"] == y["step"]
        for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=RTOL_LOSS), key


def sequential(cfg: TrainConfig, data_seed: int) -> AlphaVAE:
    """inbetween.train's loop (no logging), with the batch order drawn from data_seed instead of cfg.seed."""
    train_set = TripletDataset(cfg.data, "train", cfg.gaps)
    model = build_model(cfg, train_set.image_size)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(train_set), cfg.batch_size
    per_epoch = math.ceil(n / bs)
    for step in range(cfg.steps):
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng([data_seed, epoch]).permutation(n)
        loss = compute_loss(model, train_set.batch(order[i * bs:(i + 1) * bs]), cfg, gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# ----------------------------------------------------------------------------- layers


def test_batched_layers_equal_torch_layers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, 5, generator=g)  # (M, N, H, W, Ci)
    b = torch.randn(2, 4, generator=g)
    w = torch.randn(2, 4, 5, 4, 4, generator=g)  # Conv2d weights (M, Co, Ci, 4, 4)
    wt = torch.randn(2, 5, 4, 4, 4, generator=g)  # ConvTranspose2d weights (M, Ci, Co, 4, 4)
    w3 = torch.randn(2, 4, 5, 3, 3, generator=g)
    nchw = x.permute(0, 1, 4, 2, 3)
    for got, ref in [
        (_conv_cl(x, w, b, 2), [F.conv2d(nchw[i], w[i], b[i], stride=2, padding=1) for i in range(2)]),
        (_conv_cl(x[:1], w, b, 2), [F.conv2d(nchw[0], w[i], b[i], stride=2, padding=1) for i in range(2)]),
        (_conv_cl(x, w3, b, 1), [F.conv2d(nchw[i], w3[i], b[i], padding=1) for i in range(2)]),
        (_deconv_cl(x, wt, b), [F.conv_transpose2d(nchw[i], wt[i], b[i], stride=2, padding=1) for i in range(2)]),
    ]:
        ref = torch.stack(ref).permute(0, 1, 3, 4, 2)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_stacked_vae_equals_each_model():
    cfg = VAEConfig(image_size=16, latent=4, width=0.1)
    models = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(AlphaVAE(cfg))
    stack = StackedVAE.from_states(cfg, [m.state_dict() for m in models], "cpu")
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    logits, mu, logvar = stack(x, [torch.Generator().manual_seed(s) for s in (0, 1, 2)])
    for i, m in enumerate(models):
        ref = m(x, torch.Generator().manual_seed(i))
        for got, want in zip((logits[i], mu[i], logvar[i]), ref):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(stack.member_state(i).values(), m.state_dict().values()))


# ----------------------------------------------------------------------------- equality with sequential runs


def test_mixed_ensemble_equals_train_run_one_by_one(toy, tmp_path):
    members = [("avg-gaussian", 0.0), ("mixture", 1.0), ("jensen", 100.0)]
    cfgs = [config(toy, tmp_path / f"m{i}", alpha=a, kl_form=k) for i, (k, a) in enumerate(members)]
    models = train_ensemble(cfgs, tmp_path / "ens")  # data seed = their common seed 0, as in train()
    for i, cfg in enumerate(cfgs):
        ref = train(config(toy, tmp_path / f"ref{i}", alpha=cfg.alpha, kl_form=cfg.kl_form))
        assert_close_models(models[i], ref)
        assert_close_logs(tmp_path / f"m{i}" / "log.csv", tmp_path / f"ref{i}" / "log.csv")
        # each member's checkpoint is an inbetween.train checkpoint of its final state
        loaded = load_checkpoint(tmp_path / f"m{i}" / "checkpoint.pt")
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), models[i].state_dict().values()))
        assert read_checkpoint(tmp_path / f"m{i}" / "checkpoint.pt")["step"] == STEPS


def test_model_seeds_with_a_shared_data_seed(toy, tmp_path):
    cfgs = [config(toy, tmp_path / f"m{s}", alpha=1.0, seed=s) for s in (1, 2)]
    with pytest.raises(UserError, match="explicit data_seed"):
        train_ensemble(cfgs, tmp_path / "ens0")
    models = train_ensemble(cfgs, tmp_path / "ens", data_seed=7)
    for cfg, model in zip(cfgs, models):
        assert_close_models(model, sequential(cfg, data_seed=7))
    # different seeds give different models (the seed reaches init and noise)
    assert not torch.allclose(models[0].encoder.mu.weight, models[1].encoder.mu.weight)


def test_members_must_share_the_rest(toy, tmp_path):
    with pytest.raises(UserError, match="these differ: width"):
        check_members([config(toy, tmp_path / "a"), config(toy, tmp_path / "b", width=0.2)])
    with pytest.raises(UserError, match="distinct out_dir"):
        check_members([config(toy, tmp_path / "a"), config(toy, tmp_path / "a", alpha=2.0)])
    assert shared_key(config(toy, tmp_path / "a", alpha=3.0, seed=4)) == shared_key(config(toy, tmp_path / "b"))


# ----------------------------------------------------------------------------- early stopping, resume


def test_early_stopping_freezes_a_member_and_others_go_on(toy, tmp_path):
    # patience 1: a member stops at its first validation without a new best (alpha 1e6 makes that early).
    stopping = EarlyStopping(every=2, patience=1, val_sequences=1)
    cfgs = [config(toy, tmp_path / "a", steps=12), config(toy, tmp_path / "b", steps=12, alpha=1e6)]
    models = train_ensemble(cfgs, tmp_path / "ens", stopping=stopping)
    rows = read_log(tmp_path / "ens" / "ensemble.csv")
    status = {int(r["member"]): r["status"] for r in rows}
    ck = [read_checkpoint(tmp_path / n / "checkpoint.pt") for n in ("a", "b")]
    stopped = [i for i in (0, 1) if ck[i]["ensemble"]["status"] == "stopped"]
    assert stopped, f"no member stopped: {status}"
    for i in stopped:
        rec = ck[i]["ensemble"]
        assert rec["end_step"] < 12 and rec["best_step"] < rec["end_step"]
    # the one that went on trained to the end
    assert any(c["ensemble"]["status"] == "done" and c["step"] == 12 for c in ck) or len(stopped) == 2
    # every member equals its own run alone with the same early stopping (its stop does not touch the others)
    for i, cfg in enumerate(cfgs):
        solo = train_ensemble([config(toy, tmp_path / f"solo{i}", steps=12, alpha=cfg.alpha)], tmp_path / f"s{i}",
                              stopping=stopping)[0]
        assert_close_models(models[i], solo, steps=12)
        assert read_checkpoint(tmp_path / f"solo{i}" / "checkpoint.pt")["ensemble"]["end_step"] == \
            ck[i]["ensemble"]["end_step"]


def test_resume_is_exact(toy, tmp_path):
    stopping = EarlyStopping(every=2, patience=2, val_sequences=1)
    full = [config(toy, tmp_path / f"full{i}", steps=8, alpha=a) for i, a in enumerate((0.0, 10.0))]
    ref = train_ensemble(full, tmp_path / "ens-full", stopping=stopping)
    part = [config(toy, tmp_path / f"part{i}", steps=5, alpha=a) for i, a in enumerate((0.0, 10.0))]
    train_ensemble(part, tmp_path / "ens-part", stopping=stopping)
    with pytest.raises(UserError, match="resume=True"):
        train_ensemble(part, tmp_path / "ens-part", stopping=stopping)
    more = [config(toy, tmp_path / f"part{i}", steps=8, alpha=a, resume=True) for i, a in enumerate((0.0, 10.0))]
    with pytest.raises(UserError, match="another ensemble"):
        train_ensemble(more, tmp_path / "ens-part", stopping=EarlyStopping(every=3))
    got = train_ensemble(more, tmp_path / "ens-part", stopping=stopping)
    for a, b in zip(ref, got):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
