"""The batched network of an alpha-VAE ensemble: M AlphaVAEs of one architecture as stacked tensors, and their Adam.

inbetween.train.train_ensemble trains it: one batch stream, each member with its own alpha, KL form,
seed, sampling noise, Adam moments and TrainRun. What is per member in the optimiser: one fused Adam
over the stacked tensors is elementwise, so it is M Adams; a member's slice is the state of its own
AlphaVAE's Adam (member_optimizer_state), and stack_optimizer_states stacks such slices back, so a
member's checkpoint.pt is an ordinary alpha-VAE checkpoint and an ensemble resumes from its members'.

Equality with one model trained alone is within float rounding, not bit for bit: the shared first
convolution (M times the filters in one call) and the batched linear layers (baddbmm, not addmm)
sum in another order than one model's layers. tests/test_ensemble.py states the tolerance.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from inbetween.vae import VAEConfig


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



def stacked_adam(stack: StackedVAE, lr: float) -> torch.optim.Adam:
    """One fused Adam over the stacked tensors: elementwise, so each member's slice is its own Adam."""
    return torch.optim.Adam(list(stack.params.values()), lr=lr, fused=True)


def stack_optimizer_states(optimizer: torch.optim.Adam, stack: StackedVAE, states: Sequence[dict]) -> None:
    """Load the members' Adam state_dicts (one AlphaVAE's each, in stack order) into the stacked Adam."""
    for i, p in enumerate(stack.params.values()):
        per = [s["state"].get(i) for s in states]
        if all(per):  # a fresh member has no moments yet; then none has (they train in step)
            optimizer.state[p] = {k: (per[0][k].clone().to(p.device) if k == "step"
                                      else torch.stack([s[k] for s in per]).to(p.device)) for k in per[0]}


def member_optimizer_state(optimizer, stack: StackedVAE, row: int) -> dict:
    """Member `row`'s slice of the stacked Adam as the state_dict of one AlphaVAE's Adam (inbetween.train.make_optimizer)."""
    full = optimizer.state_dict()
    state = {}
    for i, p in enumerate(stack.params.values()):
        s = optimizer.state.get(p)
        if s:
            state[i] = {k: (v.clone() if k == "step" else v[row].clone()) for k, v in s.items()}
    return {"state": state, "param_groups": full["param_groups"]}


def keep_rows(optimizer, stack: StackedVAE, rows: list[int]) -> torch.optim.Adam:
    """Shrink the stack and its Adam to `rows`, keeping the moments of those members."""
    old = [optimizer.state.get(p, {}) for p in stack.params.values()]
    stack.keep(rows)
    new = stacked_adam(stack, optimizer.param_groups[0]["lr"])
    for p, s in zip(stack.params.values(), old):
        if s:
            new.state[p] = {k: (v.clone() if k == "step" else v[rows].clone()) for k, v in s.items()}
    return new
