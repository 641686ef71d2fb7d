"""tiermem.CPUAdam with state_dtype bf16 / int8 and bf16 parameters: the
states have the promised storage, training follows fp32 states closely, a
state dict resumes exactly in the same dtype and converts to another."""

from __future__ import annotations

import pytest
import torch

import tiermem
from tiermem import adam


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).to(
        dtype
    )


def batches(k, seed=1):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 1, generator=gen)
    out = []
    for _ in range(k):
        x = torch.randn(32, 48, generator=gen)
        out.append((x, torch.tanh(x @ w)))
    return out


def train(model, opt, data):
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x.to(next(model.parameters()).dtype)).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_state_storage_per_dtype():
    for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.uint8)):
        model = make_model()
        opt = tiermem.CPUAdam(model.parameters(), lr=1e-2, state_dtype=kind, quant_block=256)
        train(model, opt, batches(1))
        state = opt.state[model[0].weight]
        assert state["exp_avg"].dtype == dtype and state["exp_avg_sq"].dtype == dtype
        if kind == "int8":
            assert state["exp_avg_absmax"].shape == (-(-48 * 64 // 256),)
            assert state["quant_block"] == 256
        else:
            assert "exp_avg_absmax" not in state


@pytest.mark.parametrize("kind,tol", [("bf16", 0.01), ("int8", 0.03)])
def test_training_follows_fp32_states(kind, tol):
    data = batches(60)
    ref = train(m := make_model(), tiermem.CPUAdam(m.parameters(), lr=3e-3), data)
    got = train(m := make_model(), tiermem.CPUAdam(m.parameters(), lr=3e-3, state_dtype=kind), data)
    assert ref[-1] < 0.5 * ref[0]
    assert abs(sum(got[-10:]) - sum(ref[-10:])) / sum(ref[-10:]) < tol


@pytest.mark.parametrize("kind", ["fp32", "bf16", "int8"])
def test_same_dtype_resume_is_exact(kind):
    data = batches(8)
    model = make_model()
    opt = tiermem.CPUAdam(model.parameters(), lr=1e-2, state_dtype=kind, quant_block=512)
    train(model, opt, data[:4])
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = opt.state_dict()
    torch.save(saved_opt, buf := __import__("io").BytesIO())
    train(model, opt, data[4:])

    resumed = make_model(seed=5)
    resumed.load_state_dict(saved_model)
    opt2 = tiermem.CPUAdam(resumed.parameters(), lr=1e-2, state_dtype=kind, quant_block=512)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    assert (
        opt2.state[resumed[0].weight]["exp_avg"].dtype
        == opt.state[model[0].weight]["exp_avg"].dtype
    )
    train(resumed, opt2, data[4:])
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "src,dst", [("fp32", "int8"), ("int8", "fp32"), ("bf16", "int8"), ("fp32", "bf16")]
)
def test_load_converts_state_dtype(src, dst):
    model = make_model()
    opt = tiermem.CPUAdam(model.parameters(), lr=1e-2, state_dtype=src)
    train(model, opt, batches(3))
    saved = opt.state_dict()
    exp_avg, exp_avg_sq = adam.moments_as_fp32(saved["state"][0])

    opt2 = tiermem.CPUAdam(model.parameters(), lr=1e-2, state_dtype=dst)
    opt2.load_state_dict(saved)
    state = opt2.state[model[0].weight]
    assert opt2.param_groups[0]["state_dtype"] == dst
    assert adam.moment_state_dtype(state) == dst
    got_m, got_v = adam.moments_as_fp32(state)
    # within the coarser format's grid (int8: ~3% of the block maximum near 1)
    atol_m = 0.05 * exp_avg.abs().max().item()
    atol_v = 0.05 * exp_avg_sq.abs().max().item()
    assert torch.allclose(got_m, exp_avg, atol=atol_m, rtol=0.02)
    assert torch.allclose(got_v, exp_avg_sq, atol=atol_v, rtol=0.02)
    train(model, opt2, batches(2, seed=9))  # and it steps


def test_torch_adamw_state_loads_into_int8():
    model = make_model()
    ref = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, ref, batches(2))
    opt = tiermem.CPUAdam(model.parameters(), lr=1e-2, state_dtype="int8")
    opt.load_state_dict(ref.state_dict())
    got_m, _ = adam.moments_as_fp32(opt.state[model[0].weight])
    want = ref.state[model[0].weight]["exp_avg"].reshape(-1)
    assert torch.allclose(got_m, want, atol=0.05 * want.abs().max().item())


def test_bf16_params_keep_an_fp32_master():
    data = batches(5)
    ref_model = make_model()
    ref_opt = tiermem.CPUAdam(ref_model.parameters(), lr=1e-2)
    model = make_model(dtype=torch.bfloat16)
    # start the fp32 run from the same (bf16-representable) values
    with torch.no_grad():
        for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
            a.copy_(b.float())
    opt = tiermem.CPUAdam(model.parameters(), lr=1e-2)
    for x, y in data:
        for mdl, o in ((ref_model, ref_opt), (model, opt)):
            o.zero_grad()
            torch.nn.functional.mse_loss(
                mdl(x.to(next(mdl.parameters()).dtype)).float(), y
            ).backward()
        # feed the fp32 run the bf16 run's gradients, so only the master differs from rounding
        for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
            a.grad = b.grad.float()
        ref_opt.step()
        opt.step()
    for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
        master = opt.state[b]["master"]
        assert master.dtype == torch.float32
        assert torch.equal(master, a.detach())
        assert torch.equal(b.detach(), a.detach().to(torch.bfloat16))


def test_bad_state_dtype_and_block_are_refused():
    params = make_model().parameters()
    with pytest.raises(ValueError, match="state_dtype"):
        tiermem.CPUAdam(params, state_dtype="fp8")
    with pytest.raises(ValueError, match="quant_block"):
        tiermem.CPUAdam(make_model().parameters(), state_dtype="int8", quant_block=100)
