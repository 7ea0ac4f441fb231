"""The transfer f_Theta that merges the previous model with the one fitted on new data.

Zhang et al., "How to Retrain Recommender System? A Sequential Meta-Learning
Method", SIGIR 2020, section 3.2. For one row (a user's or an item's vector)
the transfer sees three "rows of a picture":

    w_{t-1},   w-hat_t,   w_{t-1} * w-hat_t / ||w_{t-1}||

A 3x1 convolution over that 3 x D picture learns how each parameter evolves
(one value per dimension and filter), a 1x1 convolution mixes the filters, and
two fully connected layers map the result back to a D-vector. One transfer
serves the users, another the items. D is the embedding size plus one (the bias).

Kinds: ``cnn`` (the paper's), ``no_cnn`` (SML-CNN: the FC layers on the flat
stack), ``no_fc`` (SML-FC: the convolutions, then a per-dimension 1x1 map back),
``alpha`` (w = a * w_{t-1} + (1 - a) * w-hat_t with a learned per dimension) and
``mlp`` (an MLP on the concatenation), the paper's two simple transfers.

Scale. The columns of a table live on different scales (the bias column is
typically ten times an embedding entry) and the scales move from period to
period. The caller passes each column's scale (``column_scale``: the RMS of the
previous model's column); the transfer reads ``w / scale`` and its output is
multiplied back, so Theta learns one mapping whatever the units, and the bias
column does not swamp the shared filters. ``scale_inputs=False`` feeds the raw
rows, as the paper does.

Bias. The last column of a row is its bias, and a user first seen after the model
was built is ranked by the item biases alone. By default the bias is merged like
any other column, which lets the transfer carry popularity across periods;
``merge_bias=False`` returns W-hat's bias unchanged (the transfer still reads it),
so a Theta trained for the users the tables know cannot bend the ranking of
everyone else. Which serves better depends on the log (docs/method.md).

Initialisation ``fine_tune`` (the default) makes the untrained transfer return
w-hat_t exactly: the output is w-hat_t plus a learned correction whose last layer
starts at zero, so a transfer that has not been trained yet behaves as
fine-tuning and cannot wreck the model. ``paper`` uses the layers' default
initialisation and no residual, as the paper's formula reads.

The 3x1 and 1x1 convolutions are written as linear maps over the channel axis,
with the channels leading: a (c_out, c_in) x (c_in, N * D) product each, the same
functions with the same parameters (``Conv2d``'s backward pass for these shapes is
several times slower on a CPU, and so are N * D products of 3 or 10 values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TransferKind = Literal["cnn", "no_cnn", "no_fc", "alpha", "mlp"]
TransferInit = Literal["fine_tune", "paper"]


@dataclass(frozen=True)
class TransferConfig:
    kind: TransferKind = "cnn"
    init: TransferInit = "fine_tune"
    conv_channels: int = 10  # "parameter evolution" filters (3x1)
    mix_channels: int = 5  # 1x1 convolution
    hidden: int = 512  # FC hidden width
    scale_inputs: bool = True  # read rows in units of their columns' RMS (see "Scale")
    merge_bias: bool = True  # the bias column is merged too; False: W-hat's bias is kept
    eps: float = 1e-8


def _picture(prev: Tensor, new: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    norm = prev.norm(dim=1, keepdim=True).clamp_min(eps)  # (N, 1)
    return prev, new, prev * new / norm  # (N, D) each


def stack_rows(prev: Tensor, new: Tensor, eps: float) -> Tensor:
    """(N, D), (N, D) -> the (N, 3, D) picture of the paper."""
    return torch.stack(_picture(prev, new, eps), dim=1)  # (N, 3, D)


def stack_planes(prev: Tensor, new: Tensor, eps: float) -> Tensor:
    """The same picture with its three rows leading: (3, N, D)."""
    return torch.stack(_picture(prev, new, eps), dim=0)  # (3, N, D)


def column_scale(table: Tensor, eps: float = 1e-8) -> Tensor:
    """The RMS of each column of a (N, D) table: (D,), never below ``eps``."""
    if table.shape[0] == 0:
        return torch.ones(table.shape[1], dtype=table.dtype, device=table.device)
    return table.detach().square().mean(0).sqrt().clamp_min(eps)


class Transfer(nn.Module):
    """f_Theta for one kind of row: (prev (N, D), new (N, D), scale (D,)) -> (N, D)."""

    def __init__(self, dim: int, config: TransferConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = dim
        c1, c2, h = config.conv_channels, config.mix_channels, config.hidden
        self.conv: nn.Module | None = None
        self.mix: nn.Module | None = None
        self.fc1: nn.Linear | None = None
        self.out: nn.Module
        if config.kind in ("cnn", "no_fc"):
            self.conv = nn.Linear(3, c1)  # the 3x1 convolution, one output per dimension
            self.mix = nn.Linear(c1, c2)  # the 1x1 convolution
        if config.kind == "cnn":
            self.fc1 = nn.Linear(c2 * dim, h)
            self.out = nn.Linear(h, dim)
        elif config.kind == "no_fc":
            self.out = nn.Linear(c2, 1)  # per-dimension 1x1 map back
        elif config.kind == "no_cnn":
            self.fc1 = nn.Linear(3 * dim, h)
            self.out = nn.Linear(h, dim)
        elif config.kind == "mlp":
            self.fc1 = nn.Linear(2 * dim, h)
            self.out = nn.Linear(h, dim)
        elif config.kind == "alpha":
            self.out = nn.Identity()
            self.alpha = nn.Parameter(torch.zeros(dim))
        else:
            raise ValueError(f"unknown transfer kind {config.kind!r}")
        if config.init == "fine_tune":
            self._start_as_fine_tune()

    @property
    def residual(self) -> bool:
        return self.config.init == "fine_tune" and self.config.kind != "alpha"

    def skippable(self) -> bool:
        """Whether a caller may use w-hat_t instead of evaluating the transfer: it is the
        identity and nothing is to be learned from it (Theta takes no gradient now). A
        lineage whose Theta was never adopted then pays what fine-tuning pays."""
        learning = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        return not learning and self.is_identity()

    def is_identity(self) -> bool:
        """Whether the transfer returns w-hat_t exactly, as it does at the fine-tune start."""
        if self.config.kind == "alpha":
            return not bool(self.alpha.detach().any())
        if not self.residual or not isinstance(self.out, nn.Linear):
            return False
        bias = self.out.bias
        return not bool(self.out.weight.detach().any()) and (
            bias is None or not bool(bias.detach().any())
        )

    def _start_as_fine_tune(self) -> None:
        if isinstance(self.out, nn.Linear):
            nn.init.zeros_(self.out.weight)
            if self.out.bias is not None:
                nn.init.zeros_(self.out.bias)

    def forward(self, prev: Tensor, new: Tensor, scale: Tensor | None = None) -> Tensor:
        out = self._merge(prev, new, scale)  # (N, D)
        if not self.config.merge_bias:  # the last column is the bias: W-hat's, as fitted
            out = torch.cat([out[:, :-1], new[:, -1:]], dim=1)
        return out

    def _merge(self, prev: Tensor, new: Tensor, scale: Tensor | None) -> Tensor:
        kind = self.config.kind
        if kind == "alpha":
            # a = 0 at start: exactly w-hat_t under either initialisation
            return new + self.alpha * (prev - new)  # (N, D)
        if scale is None or not self.config.scale_inputs:
            scale = torch.ones(self.dim, dtype=new.dtype, device=new.device)
        unit = scale  # (D,)
        prev_u, new_u = prev / unit, new / unit  # (N, D) each, in units of the columns' RMS
        if kind == "mlp":
            x = F.gelu(self.fc1(torch.cat([prev_u, new_u], dim=1)))  # type: ignore[misc]  # (N, h)
            delta = self.out(x)  # (N, D)
        elif kind == "no_cnn":
            picture = stack_rows(prev_u, new_u, self.config.eps)  # (N, 3, D)
            x = F.gelu(self.fc1(picture.flatten(1)))  # type: ignore[misc]  # (N, h)
            delta = self.out(x)  # (N, D)
        else:
            delta = self._convolved(prev_u, new_u)  # (N, D)
        delta = delta * unit  # back to the table's units
        return new + delta if self.residual else delta

    def _convolved(self, prev: Tensor, new: Tensor) -> Tensor:
        """``cnn`` and ``no_fc`` on (N, D) rows -> (N, D). The convolutions run with the
        channels leading, as (c_out, c_in) x (c_in, N * D) products, which a CPU computes
        much faster than N * D rows of 3 or 10 values; the first FC layer's weight, laid
        out for (dimension, channel) order, is read in (channel, dimension) order."""
        assert isinstance(self.conv, nn.Linear) and isinstance(self.mix, nn.Linear)
        n, d = prev.shape
        planes = stack_planes(prev, new, self.config.eps).view(3, n * d)  # (3, N*D)
        x = F.gelu(torch.addmm(self.conv.bias.unsqueeze(1), self.conv.weight, planes))  # (c1, N*D)
        x = F.gelu(torch.addmm(self.mix.bias.unsqueeze(1), self.mix.weight, x))  # (c2, N*D)
        c2 = x.shape[0]
        if self.config.kind == "no_fc":
            assert isinstance(self.out, nn.Linear)
            return torch.addmm(self.out.bias, self.out.weight, x).view(n, d)  # (N, D)
        assert self.fc1 is not None
        flat = x.view(c2, n, d).transpose(0, 1).reshape(n, c2 * d)  # (N, c2*D)
        w1 = self.fc1.weight.view(-1, d, c2).transpose(1, 2).reshape(-1, c2 * d)  # (h, c2*D)
        return self.out(F.gelu(F.linear(flat, w1, self.fc1.bias)))


class TransferPair(nn.Module):
    """The user transfer and the item transfer, trained together as Theta."""

    def __init__(self, dim: int, config: TransferConfig) -> None:
        super().__init__()
        self.user = Transfer(dim, config)
        self.item = Transfer(dim, config)
