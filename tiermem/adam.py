"""SIMD CPU Adam/AdamW for optimizer states kept off the GPU.

Two layers:

* :func:`adam_step` / :func:`adam_step_raw` - one fused pass over a buffer of
  fp32 master parameters and fp32 moments: the gradient (fp32, bf16 or fp16) is
  unscaled and clipped, checked for inf/NaN, used for the update, and a bf16 or
  fp16 copy of the new parameters is written on request. The store and engine
  call these on tiles; :func:`grad_sqnorm` gives the squared L2 norm for
  global-norm clipping.
* :class:`CPUAdam` - a ``torch.optim.Optimizer`` over CPU fp32 parameters,
  with ``torch.optim.Adam``/``AdamW``'s state layout, so state dicts move
  between them either way.

The native kernels (AVX-512, AVX2 or scalar, picked by CPUID or forced with
``TIERMEM_SIMD``) give bit-identical results; :func:`simd_name` says which one
runs.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import Any

import torch

from tiermem._native import native

__all__ = [
    "CPUAdam",
    "adam_step",
    "adam_step_raw",
    "grad_sqnorm",
    "grad_sqnorm_raw",
    "get_num_threads",
    "set_num_threads",
    "simd_name",
    "simd_reason",
    "simd_supported",
    "SIMD_LEVELS",
]

# tm_simd values (tiermem_adam.h)
SIMD_LEVELS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}
# tm_dtype values (tiermem_adam.h)
_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_NO_DTYPE = -1

DTypeLike = torch.dtype | str


def _dtype_code(dtype: DTypeLike) -> int:
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPE_NAMES)}, not {dtype!r}")
        dtype = _DTYPE_NAMES[dtype]
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, not {dtype}")
    return _DTYPE_CODES[dtype]


def _simd_code(simd: str | None) -> int:
    if simd is None:
        return 0
    if simd not in SIMD_LEVELS:
        raise ValueError(f"simd must be one of {sorted(SIMD_LEVELS)}, not {simd!r}")
    return SIMD_LEVELS[simd]


def _check(rc: int, what: str) -> None:
    if rc == 0:
        return
    err = -rc
    if err == errno.EINVAL:
        raise ValueError(f"{what}: invalid argument")
    if err == errno.ENOTSUP:
        raise RuntimeError(f"{what}: the requested SIMD level is not supported by this CPU")
    raise OSError(err, f"{what}: {errno.errorcode.get(err, err)}")


def simd_name() -> str:
    """The kernel set this process uses: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    lib = native.lib
    return native.ffi.string(lib.tm_simd_name(lib.tm_simd_active())).decode()


def simd_reason() -> str:
    """Why :func:`simd_name` was chosen (CPUID, or ``TIERMEM_SIMD``)."""
    return native.ffi.string(native.lib.tm_simd_reason()).decode()


def simd_supported(simd: str) -> bool:
    """Whether this CPU can run the named kernel set (``scalar`` always can)."""
    return bool(native.lib.tm_simd_supported(_simd_code(simd)))


def set_num_threads(n: int) -> None:
    """Size the kernels' worker pool; ``0`` means the CPUs this process may use."""
    _check(native.lib.tm_adam_set_threads(int(n)), "set_num_threads")


def get_num_threads() -> int:
    """The worker pool size (threads including the caller)."""
    return int(native.lib.tm_adam_threads())


def adam_step_raw(
    n: int,
    param: int,
    exp_avg: int,
    exp_avg_sq: int,
    grad: int,
    *,
    grad_dtype: DTypeLike,
    step: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    adamw_mode: bool = True,
    bias_correction: bool = True,
    inv_loss_scale: float = 1.0,
    clip_coef: float = 1.0,
    skip_on_overflow: bool = False,
    param_out: int = 0,
    out_dtype: DTypeLike | None = None,
    simd: str | None = None,
    threads: int = 0,
) -> bool:
    """One fused Adam/AdamW step over ``n`` elements at raw addresses.

    ``param``, ``exp_avg`` and ``exp_avg_sq`` address fp32 arrays updated in
    place; ``grad`` holds ``grad_dtype`` elements, used as
    ``grad * inv_loss_scale * clip_coef``. With ``out_dtype`` set, the new
    parameters are also written to ``param_out`` in that dtype
    (round-to-nearest-even). ``step`` is the 1-based step count including this
    update. ``simd`` forces a kernel set for this call (tests); ``threads``
    caps the threads used (0 = the pool).

    Returns True if some scaled gradient element was inf or NaN; then, with
    ``skip_on_overflow``, nothing was written at all.
    """
    ffi, lib = native.ffi, native.lib
    cfg = ffi.new("tm_adam_config *")
    cfg.lr = lr
    cfg.beta1, cfg.beta2 = float(betas[0]), float(betas[1])
    cfg.eps = eps
    cfg.weight_decay = weight_decay
    cfg.step = int(step)
    cfg.adamw_mode = int(bool(adamw_mode))
    cfg.bias_correction = int(bool(bias_correction))
    cfg.inv_loss_scale = inv_loss_scale
    cfg.clip_coef = clip_coef
    cfg.skip_on_overflow = int(bool(skip_on_overflow))
    cfg.simd = _simd_code(simd)
    cfg.threads = int(threads)
    overflow = ffi.new("int *")
    out_code = _NO_DTYPE if out_dtype is None else _dtype_code(out_dtype)
    rc = lib.tm_adam_step(
        cfg,
        int(n),
        ffi.cast("float *", param),
        ffi.cast("float *", exp_avg),
        ffi.cast("float *", exp_avg_sq),
        ffi.cast("void *", grad),
        _dtype_code(grad_dtype),
        ffi.cast("void *", param_out),
        out_code,
        overflow,
    )
    _check(rc, "tm_adam_step")
    return bool(overflow[0])


def _require_buffer(t: torch.Tensor, name: str, numel: int, dtypes: Iterable[torch.dtype]) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, not {t.device}")
    if t.dtype not in tuple(dtypes):
        raise ValueError(f"{name} has dtype {t.dtype}; expected one of {tuple(dtypes)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if t.numel() != numel:
        raise ValueError(f"{name} has {t.numel()} elements, expected {numel}")


def adam_step(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    grad: torch.Tensor,
    *,
    step: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    adamw_mode: bool = True,
    bias_correction: bool = True,
    inv_loss_scale: float = 1.0,
    clip_coef: float = 1.0,
    skip_on_overflow: bool = False,
    param_out: torch.Tensor | None = None,
    simd: str | None = None,
    threads: int = 0,
) -> bool:
    """:func:`adam_step_raw` on contiguous CPU tensors (the same element count).

    ``param``, ``exp_avg`` and ``exp_avg_sq`` are fp32 and updated in place;
    ``grad`` is fp32, bf16 or fp16; ``param_out`` (optional; fp32, bf16 or
    fp16) receives the new parameters. Returns True on an inf/NaN gradient.
    """
    n = param.numel()
    _require_buffer(param, "param", n, (torch.float32,))
    _require_buffer(exp_avg, "exp_avg", n, (torch.float32,))
    _require_buffer(exp_avg_sq, "exp_avg_sq", n, (torch.float32,))
    _require_buffer(grad, "grad", n, _DTYPE_CODES)
    if param_out is not None:
        _require_buffer(param_out, "param_out", n, _DTYPE_CODES)
    return adam_step_raw(
        n,
        param.data_ptr(),
        exp_avg.data_ptr(),
        exp_avg_sq.data_ptr(),
        grad.data_ptr(),
        grad_dtype=grad.dtype,
        step=step,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        adamw_mode=adamw_mode,
        bias_correction=bias_correction,
        inv_loss_scale=inv_loss_scale,
        clip_coef=clip_coef,
        skip_on_overflow=skip_on_overflow,
        param_out=0 if param_out is None else param_out.data_ptr(),
        out_dtype=None if param_out is None else param_out.dtype,
        simd=simd,
        threads=threads,
    )


def grad_sqnorm_raw(
    grad: int, n: int, dtype: DTypeLike, *, simd: str | None = None, threads: int = 0
) -> float:
    """Sum of squares (in float64) of ``n`` gradient elements at address ``grad``.

    One read of the gradient. An inf/NaN element gives an inf or NaN result,
    so the same call detects overflow for the whole step.
    """
    ffi = native.ffi
    out = ffi.new("double *")
    rc = native.lib.tm_grad_sqnorm(
        ffi.cast("void *", grad), _dtype_code(dtype), int(n), _simd_code(simd), int(threads), out
    )
    _check(rc, "tm_grad_sqnorm")
    return float(out[0])


def grad_sqnorm(grad: torch.Tensor, *, simd: str | None = None, threads: int = 0) -> float:
    """:func:`grad_sqnorm_raw` on a contiguous CPU tensor (fp32, bf16 or fp16)."""
    _require_buffer(grad, "grad", grad.numel(), _DTYPE_CODES)
    return grad_sqnorm_raw(grad.data_ptr(), grad.numel(), grad.dtype, simd=simd, threads=threads)


class CPUAdam(torch.optim.Optimizer):
    """Adam/AdamW on CPU fp32 parameters with the native fused kernels.

    A drop-in for ``torch.optim.AdamW`` (``adamw_mode=True``, the default) or
    ``torch.optim.Adam`` (``adamw_mode=False``: weight decay added to the
    gradient) on CPU: param groups, LR schedulers, ``zero_grad`` and
    ``state_dict``/``load_state_dict`` behave the same, and the per-parameter
    state is torch's (``step`` as a float32 scalar tensor, ``exp_avg``,
    ``exp_avg_sq``), so a state dict loads into either class and back.

    Parameters must be contiguous fp32 CPU tensors; gradients may be fp32,
    bf16 or fp16. ``amsgrad`` and ``maximize`` are not supported.

    [Note: ``adamw_mode`` is stored in each group as torch's
    ``decoupled_weight_decay`` key rather than a key of our own: torch.optim.Adam
    reads that key from a loaded state dict, so an AdamW state saved here and
    loaded into Adam keeps decoupled decay instead of silently switching to L2.]
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        adamw_mode: bool = True,
        bias_correction: bool = True,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        simd: str | None = None,
        threads: int = 0,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameters: {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if amsgrad or maximize:
            raise ValueError("CPUAdam supports neither amsgrad nor maximize")
        _simd_code(simd)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=False,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=bool(adamw_mode),
            bias_correction=bool(bias_correction),
        )
        super().__init__(params, defaults)
        self.simd = simd
        self.threads = threads

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", self.defaults["decoupled_weight_decay"])
            group.setdefault("bias_correction", True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by CPUAdam, ``torch.optim.Adam`` or ``torch.optim.AdamW``."""
        super().load_state_dict(state_dict)
        # torch's loader keeps only the saved groups' keys; fill in ours
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", self.defaults["decoupled_weight_decay"])
            group.setdefault("bias_correction", True)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One optimizer step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("amsgrad") or group.get("maximize"):
                raise ValueError("CPUAdam supports neither amsgrad nor maximize")
            lr = float(group["lr"])
            betas = (float(group["betas"][0]), float(group["betas"][1]))
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._step_param(p, group, lr, betas)
        return loss

    def _step_param(
        self, p: torch.Tensor, group: dict[str, Any], lr: float, betas: tuple[float, float]
    ) -> None:
        grad = p.grad
        if grad.is_sparse:
            raise RuntimeError("CPUAdam does not support sparse gradients")
        if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
            raise ValueError(
                "CPUAdam needs contiguous float32 CPU parameters "
                f"(got {p.dtype} on {p.device}, contiguous={p.is_contiguous()})"
            )
        if not grad.is_contiguous():
            grad = grad.contiguous()
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        if not torch.is_tensor(state["step"]):
            state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        for key in ("exp_avg", "exp_avg_sq"):
            if not state[key].is_contiguous():
                state[key] = state[key].contiguous()
        state["step"] += 1
        adam_step(
            p.data,
            state["exp_avg"],
            state["exp_avg_sq"],
            grad,
            step=int(state["step"].item()),
            lr=lr,
            betas=betas,
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            adamw_mode=bool(group["decoupled_weight_decay"]),
            bias_correction=bool(group["bias_correction"]),
            simd=self.simd,
            threads=self.threads,
        )
