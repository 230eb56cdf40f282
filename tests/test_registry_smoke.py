import pytest
import torch

from lnlab.norms import available, make_norm, parse_spec


@pytest.mark.parametrize("name", available())
def test_every_registered_norm_builds_and_backprops(name):
    norm = make_norm(name, 16)
    x = torch.randn(4, 16, requires_grad=True)
    y = norm(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: layernorm"):
        make_norm("layernrom", 8)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match="valid options: C, k, eps"):
        parse_spec("adanorm:c=2")


def test_groups_must_divide_dim():
    with pytest.raises(ValueError, match="does not divide"):
        make_norm("groupln:groups=3", 16)
