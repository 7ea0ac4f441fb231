"""The transfer: output shapes for every kind, the fine-tune start, gradients."""

import pytest
import torch

from sml.transfer import Transfer, TransferConfig, TransferPair, column_scale, stack_rows

KINDS = ["cnn", "no_cnn", "no_fc", "alpha", "mlp"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("init", ["fine_tune", "paper"])
def test_output_shape(kind: str, init: str) -> None:
    transfer = Transfer(9, TransferConfig(kind=kind, init=init, hidden=16))  # type: ignore[arg-type]
    out = transfer(torch.randn(5, 9), torch.randn(5, 9))
    assert out.shape == (5, 9)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_transfer_is_fine_tune(kind: str) -> None:
    transfer = Transfer(9, TransferConfig(kind=kind, init="fine_tune"))  # type: ignore[arg-type]
    prev, new = torch.randn(6, 9), torch.randn(6, 9)
    assert torch.equal(transfer(prev, new), new)


@pytest.mark.parametrize("kind", ["cnn", "no_cnn", "no_fc", "mlp"])
def test_paper_init_is_not_identity(kind: str) -> None:
    transfer = Transfer(9, TransferConfig(kind=kind, init="paper"))  # type: ignore[arg-type]
    prev, new = torch.randn(6, 9), torch.randn(6, 9)
    assert not torch.allclose(transfer(prev, new), new)


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_gets_a_gradient_after_one_step(kind: str) -> None:
    torch.manual_seed(0)
    transfer = Transfer(9, TransferConfig(kind=kind, hidden=16))  # type: ignore[arg-type]
    optimizer = torch.optim.SGD(transfer.parameters(), lr=0.1)
    for _ in range(2):  # the zeroed output layer opens the way on the first step
        optimizer.zero_grad()
        transfer(torch.randn(4, 9), torch.randn(4, 9)).square().sum().backward()
        optimizer.step()
    for name, p in transfer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_picture_rows() -> None:
    prev = torch.tensor([[3.0, 4.0]])
    new = torch.tensor([[1.0, 2.0]])
    picture = stack_rows(prev, new, 1e-8)
    assert picture.shape == (1, 3, 2)
    assert torch.allclose(picture[0, 2], torch.tensor([3.0 / 5.0, 8.0 / 5.0]))


def test_ablations_differ_in_structure() -> None:
    dim = 9
    sizes = {
        k: sum(p.numel() for p in Transfer(dim, TransferConfig(kind=k)).parameters()) for k in KINDS
    }  # type: ignore[arg-type]
    assert sizes["alpha"] == dim
    assert sizes["no_fc"] < sizes["cnn"]  # no FC layers
    assert sizes["no_cnn"] != sizes["cnn"]


def test_pair_has_one_transfer_per_side() -> None:
    """Two transfers with parameters of their own: training the user side leaves
    the item side as it was, and Theta holds both sides' parameters."""
    pair = TransferPair(5, TransferConfig(kind="cnn", init="paper", hidden=8))
    assert isinstance(pair.user, Transfer) and isinstance(pair.item, Transfer)
    user_ids = {id(p) for p in pair.user.parameters()}
    assert user_ids.isdisjoint(id(p) for p in pair.item.parameters())
    assert len(list(pair.parameters())) == 2 * len(list(pair.user.parameters()))
    before = {k: v.clone() for k, v in pair.item.state_dict().items()}
    optimizer = torch.optim.SGD(pair.user.parameters(), lr=0.1)
    pair.user(torch.randn(3, 5), torch.randn(3, 5)).square().sum().backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in pair.item.state_dict().items())


@pytest.mark.parametrize("kind", ["cnn", "no_cnn", "no_fc", "mlp"])
def test_the_correction_is_added_to_w_hat_not_to_the_previous_rows(kind: str) -> None:
    """Fine-tune start with only the output bias set: the transfer returns
    W-hat plus that bias (in units of the columns' scale), whatever the previous rows."""
    config = TransferConfig(kind=kind, hidden=8, merge_bias=True)  # type: ignore[arg-type]
    transfer = Transfer(4, config)
    with torch.no_grad():
        transfer.out.bias.fill_(0.25)  # type: ignore[union-attr]
    prev, new = torch.randn(3, 4), torch.randn(3, 4)
    scale = torch.tensor([1.0, 2.0, 0.5, 4.0])
    assert torch.allclose(transfer(prev, new, scale), new + 0.25 * scale)
    assert torch.allclose(transfer(prev, new), new + 0.25)


@pytest.mark.parametrize("kind", ["cnn", "no_cnn", "no_fc", "mlp", "alpha"])
@pytest.mark.parametrize("init", ["fine_tune", "paper"])
def test_the_bias_column_is_w_hats_unless_merged(kind: str, init: str) -> None:
    """Without merge_bias the last column (the bias) comes out as W-hat's, whatever Theta
    is, and the other columns are merged exactly as with it; with it (the default) the
    bias is merged too."""
    torch.manual_seed(0)
    prev, new = torch.randn(3, 4), torch.randn(3, 4)
    outputs = {}
    for merge_bias in (False, True):
        config = TransferConfig(kind=kind, init=init, hidden=8, merge_bias=merge_bias)  # type: ignore[arg-type]
        transfer = Transfer(4, config)
        with torch.no_grad():
            for p in transfer.parameters():
                p.copy_(torch.linspace(-0.5, 0.7, p.numel()).view_as(p))
        outputs[merge_bias] = transfer(prev, new, column_scale(prev))
    out, merged = outputs[False], outputs[True]
    assert out.shape == merged.shape == new.shape
    assert torch.equal(out[:, -1], new[:, -1])
    assert torch.equal(out[:, :-1], merged[:, :-1])
    assert not torch.allclose(out[:, :-1], new[:, :-1])
    assert not torch.allclose(merged[:, -1], new[:, -1])


@pytest.mark.parametrize("kind", ["cnn", "no_cnn", "no_fc", "mlp"])
def test_the_transfer_reads_rows_in_units_of_their_columns(kind: str) -> None:
    """Scaled inputs, scaled output: a table whose columns are c times larger (with scales
    c times larger) merges to c times the rows, so Theta does not depend on the units."""
    torch.manual_seed(0)
    transfer = Transfer(9, TransferConfig(kind=kind, init="paper", hidden=16))  # type: ignore[arg-type]
    prev, new = torch.randn(6, 9), torch.randn(6, 9)
    scale = column_scale(prev)
    c = torch.linspace(0.5, 20.0, 9)  # a different factor per column, e.g. the bias
    out = transfer(prev, new, scale)
    assert torch.allclose(transfer(prev * c, new * c, scale * c), out * c, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(transfer(prev * c, new * c, scale), out * c, rtol=1e-2)


def test_column_scale_is_each_columns_rms() -> None:
    table = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, -1.0]])
    assert torch.allclose(column_scale(table, eps=1e-3), torch.tensor([12.5**0.5, 1e-3, 1.0]))


@pytest.mark.parametrize("kind", KINDS)
def test_is_identity_exactly_while_the_transfer_returns_w_hat(kind: str) -> None:
    transfer = Transfer(9, TransferConfig(kind=kind, hidden=16))  # type: ignore[arg-type]
    assert transfer.is_identity()
    with torch.no_grad():
        next(p for name, p in transfer.named_parameters() if name.startswith(("out", "alpha")))[
            0
        ] += 0.5
    assert not transfer.is_identity()
    prev, new = torch.randn(4, 9), torch.randn(4, 9)
    assert not torch.allclose(transfer(prev, new), new)
    assert not Transfer(9, TransferConfig(kind=kind, init="paper", hidden=16)).is_identity() or (
        kind == "alpha"
    )


def test_a_transfer_is_skippable_only_while_it_does_not_learn() -> None:
    transfer = Transfer(9, TransferConfig(hidden=16))
    assert not transfer.skippable()  # its parameters take gradients: it is being trained
    transfer.requires_grad_(False)
    assert transfer.skippable()  # fixed, and the identity
    transfer.requires_grad_(True)
    with torch.no_grad():
        assert transfer.skippable()


def test_picture_rows_are_scaled_by_each_rows_own_norm() -> None:
    prev = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    new = torch.tensor([[1.0, 2.0], [5.0, 7.0]])
    picture = stack_rows(prev, new, 1e-8)
    assert torch.equal(picture[:, 0], prev) and torch.equal(picture[:, 1], new)
    assert torch.allclose(picture[:, 2], torch.tensor([[3.0 / 5.0, 8.0 / 5.0], [0.0, 7.0]]))


def test_column_scale_of_an_empty_or_single_row_table() -> None:
    empty = column_scale(torch.empty(0, 3, dtype=torch.float64))
    assert torch.equal(empty, torch.ones(3, dtype=torch.float64))
    assert empty.dtype == torch.float64  # the table's own dtype
    small = column_scale(torch.tensor([[0.1, 0.0], [-0.1, 0.0]]))  # the default floor is tiny
    assert torch.allclose(small, torch.tensor([0.1, 1e-8]), rtol=1e-6, atol=0.0)
    one = column_scale(torch.tensor([[3.0, -4.0, 0.0]]), eps=1e-3)
    assert torch.allclose(one, torch.tensor([3.0, 4.0, 1e-3]))


def test_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown transfer kind 'bogus'"):
        Transfer(4, TransferConfig(kind="bogus"))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["alpha", "mlp", "no_cnn"])
def test_layers_a_kind_does_not_have_are_none(kind: str) -> None:
    transfer = Transfer(4, TransferConfig(kind=kind, hidden=8))  # type: ignore[arg-type]
    assert transfer.conv is None and transfer.mix is None
    if kind == "alpha":
        assert transfer.fc1 is None


@pytest.mark.parametrize("kind", ["cnn", "no_cnn", "no_fc", "mlp"])
def test_the_paper_init_returns_the_correction_alone(kind: str) -> None:
    """No residual under the paper's init: with the output layer zeroed the
    transfer returns zeros (not W-hat), and so it is not the identity."""
    config = TransferConfig(kind=kind, init="paper", hidden=8, merge_bias=True)  # type: ignore[arg-type]
    transfer = Transfer(4, config)
    with torch.no_grad():
        transfer.out.weight.zero_()  # type: ignore[union-attr]
        transfer.out.bias.zero_()  # type: ignore[union-attr]
    prev, new = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(transfer(prev, new), torch.zeros(3, 4))
    assert not transfer.is_identity()


@pytest.mark.parametrize("kind", ["cnn", "no_cnn", "no_fc", "mlp"])
def test_an_output_bias_alone_makes_it_no_identity(kind: str) -> None:
    transfer = Transfer(4, TransferConfig(kind=kind, hidden=8))  # type: ignore[arg-type]
    assert transfer.is_identity()
    with torch.no_grad():
        transfer.out.bias.view(-1)[0] = 0.5  # type: ignore[union-attr]
    assert not transfer.is_identity()
    assert not transfer.skippable()


def test_alpha_mixes_the_previous_and_the_fitted_rows() -> None:
    transfer = Transfer(3, TransferConfig(kind="alpha", merge_bias=True))
    with torch.no_grad():
        transfer.alpha.copy_(torch.tensor([0.0, 0.25, 1.0]))
    prev, new = torch.tensor([[4.0, 4.0, 4.0]]), torch.tensor([[2.0, 2.0, 2.0]])
    assert torch.allclose(transfer(prev, new), torch.tensor([[2.0, 2.5, 4.0]]))
    assert not transfer.is_identity()


@pytest.mark.parametrize("kind", ["cnn", "no_fc"])
def test_the_convolutions_are_the_papers_3x1_and_1x1_filters(kind: str) -> None:
    """The channel-leading products compute what Conv2d computes over the 3 x D picture:
    a 3x1 filter per channel, a 1x1 mix, then (cnn) the FC layers on the (D, channel)
    flattening or (no_fc) a per-dimension 1x1 map; forward and gradients alike."""
    torch.manual_seed(3)
    config = TransferConfig(kind=kind, init="paper", hidden=16, scale_inputs=False)  # type: ignore[arg-type]
    transfer = Transfer(7, config)
    assert transfer.conv is not None and transfer.mix is not None
    conv = torch.nn.Conv2d(1, 10, (3, 1))
    mix = torch.nn.Conv2d(10, 5, 1)
    with torch.no_grad():
        conv.weight.copy_(transfer.conv.weight.view(10, 1, 3, 1))
        conv.bias.copy_(transfer.conv.bias)
        mix.weight.copy_(transfer.mix.weight.view(5, 10, 1, 1))
        mix.bias.copy_(transfer.mix.bias)
    prev, new = torch.randn(4, 7, requires_grad=True), torch.randn(4, 7, requires_grad=True)

    def reference() -> torch.Tensor:
        picture = stack_rows(prev, new, 1e-8).unsqueeze(1)  # (N, 1, 3, D)
        x = torch.nn.functional.gelu(mix(torch.nn.functional.gelu(conv(picture))))  # (N, 5, 1, D)
        x = x.squeeze(2).transpose(1, 2)  # (N, D, 5)
        if kind == "no_fc":
            return transfer.out(x).squeeze(-1)
        assert transfer.fc1 is not None
        return transfer.out(torch.nn.functional.gelu(transfer.fc1(x.flatten(1))))

    def gradients(out: torch.Tensor, filters: tuple[torch.nn.Module, ...]) -> list[torch.Tensor]:
        """d(sum of squares) by the inputs, the output layer and the two filters."""
        out.square().sum().backward()
        tensors = [prev, new, transfer.out.weight, *(f.weight for f in filters)]
        found = [t.grad.clone().view(t.shape[0], -1) for t in tensors if t.grad is not None]
        for t in (prev, new):
            t.grad = None
        transfer.zero_grad()
        assert len(found) == 5
        return found

    expected = reference()
    wanted = gradients(expected, (conv, mix))
    got = transfer(prev, new)
    assert torch.allclose(got, expected, atol=1e-6)
    assert transfer.conv is not None and transfer.mix is not None
    found = gradients(got, (transfer.conv, transfer.mix))
    assert all(torch.allclose(f, w, atol=1e-5) for f, w in zip(found, wanted, strict=True))
