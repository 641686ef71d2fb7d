"""Bad arguments are refused before any memory is touched."""

from __future__ import annotations

import pytest
import torch

from tiermem import adam


def bufs(n=10):
    return [torch.zeros(n) for _ in range(4)]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1.0),
        dict(eps=float("nan")),
        dict(betas=(1.0, 0.999)),
        dict(betas=(0.9, -0.1)),
        dict(weight_decay=-0.1),
        dict(step=0),
        dict(inv_loss_scale=float("inf")),
        dict(threads=-2),
    ],
)
def test_invalid_hyperparameters(kwargs):
    p, m, v, g = bufs()
    p += 1
    kwargs.setdefault("step", 1)
    with pytest.raises(ValueError):
        adam.adam_step(p, m, v, g, **kwargs)
    assert torch.equal(p, torch.ones(10))


def test_step_zero_is_fine_without_bias_correction():
    p, m, v, g = bufs()
    adam.adam_step(p, m, v, g + 1, step=0, bias_correction=False, lr=0.1)
    assert (p < 0).all()


def test_invalid_buffers():
    p, m, v, g = bufs()
    with pytest.raises(ValueError, match="dtype"):
        adam.adam_step(p, m, v, g.double(), step=1)
    with pytest.raises(ValueError, match="elements"):
        adam.adam_step(p, m, v[:5], g, step=1)
    with pytest.raises(ValueError, match="contiguous"):
        adam.adam_step(p, m, v, torch.zeros(20)[::2], step=1)
    with pytest.raises(ValueError, match="dtype"):
        adam.adam_step(p, m, v, g, step=1, param_out=torch.zeros(10, dtype=torch.int16))
    with pytest.raises(ValueError):
        adam.adam_step(p, m, v, g, step=1, simd="sse2")
    with pytest.raises(ValueError):
        adam.adam_step_raw(
            10,
            p.data_ptr(),
            m.data_ptr(),
            v.data_ptr(),
            g.data_ptr(),
            grad_dtype="float32",
            step=1,
            out_dtype="bfloat16",
        )  # no param_out
    with pytest.raises(ValueError):
        adam.CPUAdam([torch.nn.Parameter(p)], amsgrad=True)
    opt = adam.CPUAdam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))])
    opt.param_groups[0]["params"][0].grad = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32"):
        opt.step()
