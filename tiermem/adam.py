"""SIMD CPU Adam/AdamW for optimizer states kept off the GPU.

Two layers:

* :func:`adam_step` / :func:`adam_step_raw` - one fused pass over a buffer of
  fp32 master parameters and fp32 moments: the gradient (fp32, bf16 or fp16) is
  unscaled and clipped, checked for inf/NaN, used for the update, and a bf16 or
  fp16 copy of the new parameters is written on request. The store and engine
  call these on tiles; :func:`grad_sqnorm` gives the squared L2 norm for
  global-norm clipping.
* :class:`CPUAdam` - a ``torch.optim.Optimizer`` over CPU fp32 (or bf16, with
  an fp32 master copy) parameters, with ``torch.optim.Adam``/``AdamW``'s state
  layout for fp32 states, so state dicts move between them either way.

Moments may be stored compactly (``state_dtype``): ``"bf16"`` (2 bytes per
element, rounded to nearest even after every update: about 3 significant
digits, so a moment changes only once its update exceeds ~0.4% of it) or
``"int8"`` (1 byte plus one fp32 scale per block: block-wise dynamic
quantization as in Dettmers et al., 8-bit Optimizers). The update itself is
always computed in fp32 from the dequantized moments; master weights stay fp32.

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
    "STATE_DTYPES",
    "QUANT_BLOCK",
    "adam_step",
    "dequantize_blockwise",
    "quant_map",
    "quantize_blockwise",
    "state_nbytes",
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
# tm_state_dtype values
_STATE_CODES = {"fp32": 0, "bf16": 1, "int8": 2}
STATE_DTYPES = tuple(_STATE_CODES)
# Elements per int8 scale: bitsandbytes' optimizer block (the kernel takes
# multiples of 64 in [256, 2048]).
QUANT_BLOCK = 2048
QUANT_BLOCK_RANGE = (256, 2048)

DTypeLike = torch.dtype | str


def _dtype_code(dtype: DTypeLike) -> int:
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPE_NAMES)}, not {dtype!r}")
        dtype = _DTYPE_NAMES[dtype]
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, not {dtype}")
    return _DTYPE_CODES[dtype]


def check_state_dtype(state_dtype: str) -> str:
    """``state_dtype`` if it is one of :data:`STATE_DTYPES`, else ValueError."""
    if state_dtype not in _STATE_CODES:
        raise ValueError(f"state_dtype must be one of {list(STATE_DTYPES)}, not {state_dtype!r}")
    return state_dtype


def state_nbytes(n: int, state_dtype: str = "fp32", quant_block: int = QUANT_BLOCK) -> int:
    """Bytes of Adam state for ``n`` parameters: the fp32 master plus both moments
    (12 per element in fp32, 8 with bf16 moments, 6 plus one fp32 scale per moment
    and ``quant_block`` elements with int8)."""
    check_state_dtype(state_dtype)
    if state_dtype == "fp32":
        return 12 * n
    if state_dtype == "bf16":
        return 8 * n
    return 6 * n + 8 * (-(-n // quant_block))


def check_quant_block(block: int) -> int:
    """``block`` if the int8 kernel takes it (a multiple of 64 in [256, 2048])."""
    lo, hi = QUANT_BLOCK_RANGE
    if isinstance(block, bool) or not isinstance(block, int) or not lo <= block <= hi or block % 64:
        raise ValueError(f"quant_block must be a multiple of 64 in [{lo}, {hi}], not {block!r}")
    return block


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
    state_dtype: str = "fp32",
    quant_block: int = QUANT_BLOCK,
    exp_avg_absmax: int = 0,
    exp_avg_sq_absmax: int = 0,
) -> bool:
    """One fused Adam/AdamW step over ``n`` elements at raw addresses.

    ``param``, ``exp_avg`` and ``exp_avg_sq`` address fp32 arrays updated in
    place; ``grad`` holds ``grad_dtype`` elements, used as
    ``grad * inv_loss_scale * clip_coef``. With ``out_dtype`` set, the new
    parameters are also written to ``param_out`` in that dtype
    (round-to-nearest-even). ``step`` is the 1-based step count including this
    update. ``simd`` forces a kernel set for this call (tests); ``threads``
    caps the threads used (0 = the pool).

    ``state_dtype`` says how ``exp_avg``/``exp_avg_sq`` are stored: fp32,
    bf16 (uint16 bit patterns) or int8 (uint8 codes, with
    ``exp_avg_absmax``/``exp_avg_sq_absmax`` addressing ceil(n / quant_block)
    fp32 scales; ``n`` then starts at a block boundary).

    Returns True if some scaled gradient element was inf or NaN; then, with
    ``skip_on_overflow``, nothing was written at all.
    """
    check_state_dtype(state_dtype)
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
    if state_dtype == "fp32":
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
    else:
        state = ffi.new("tm_adam_state *")
        state.dtype = _STATE_CODES[state_dtype]
        state.block = check_quant_block(quant_block) if state_dtype == "int8" else 0
        state.exp_avg = ffi.cast("void *", exp_avg)
        state.exp_avg_sq = ffi.cast("void *", exp_avg_sq)
        state.exp_avg_absmax = ffi.cast("float *", exp_avg_absmax)
        state.exp_avg_sq_absmax = ffi.cast("float *", exp_avg_sq_absmax)
        rc = lib.tm_adam_step_states(
            cfg,
            int(n),
            ffi.cast("float *", param),
            state,
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
    exp_avg_absmax: torch.Tensor | None = None,
    exp_avg_sq_absmax: torch.Tensor | None = None,
    quant_block: int = QUANT_BLOCK,
) -> bool:
    """:func:`adam_step_raw` on contiguous CPU tensors (the same element count).

    ``param`` is fp32 and updated in place, as are the moments, whose dtype
    picks the state dtype: fp32 or bf16 tensors, or uint8 codes (int8 states)
    with ``exp_avg_absmax``/``exp_avg_sq_absmax`` fp32 scales, one per
    ``quant_block`` elements. ``grad`` is fp32, bf16 or fp16; ``param_out``
    (optional; fp32, bf16 or fp16) receives the new parameters. Returns True
    on an inf/NaN gradient.
    """
    n = param.numel()
    _require_buffer(param, "param", n, (torch.float32,))
    state_dtype = _STATE_OF_TENSOR.get(exp_avg.dtype, "fp32")
    moment_dtype = _TENSOR_OF_STATE[state_dtype]
    _require_buffer(exp_avg, "exp_avg", n, (moment_dtype,))
    _require_buffer(exp_avg_sq, "exp_avg_sq", n, (moment_dtype,))
    _require_buffer(grad, "grad", n, _DTYPE_CODES)
    if param_out is not None:
        _require_buffer(param_out, "param_out", n, _DTYPE_CODES)
    absmax_ptrs = (0, 0)
    if state_dtype == "int8":
        check_quant_block(quant_block)
        blocks = -(-n // quant_block)
        for name, t in (
            ("exp_avg_absmax", exp_avg_absmax),
            ("exp_avg_sq_absmax", exp_avg_sq_absmax),
        ):
            if t is None:
                raise ValueError(f"{name} is required with uint8 (int8-state) moments")
            _require_buffer(t, name, blocks, (torch.float32,))
        absmax_ptrs = (exp_avg_absmax.data_ptr(), exp_avg_sq_absmax.data_ptr())
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
        state_dtype=state_dtype,
        quant_block=quant_block,
        exp_avg_absmax=absmax_ptrs[0],
        exp_avg_sq_absmax=absmax_ptrs[1],
    )


_STATE_OF_TENSOR = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.uint8: "int8"}
_TENSOR_OF_STATE = {v: k for k, v in _STATE_OF_TENSOR.items()}


def quant_map(signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 states' 256-entry dynamic map (ascending) and its midpoints.

    ``signed`` selects exp_avg's map, else exp_avg_sq's. A normalized value
    takes the code of the nearest entry; one equal to a midpoint the lower.
    """
    values = torch.empty(256, dtype=torch.float32)
    mids = torch.empty(256, dtype=torch.float32)
    ffi = native.ffi
    native.lib.tm_adam_quant_map(
        int(bool(signed)),
        ffi.cast("float *", values.data_ptr()),
        ffi.cast("float *", mids.data_ptr()),
    )
    return values, mids


def quantize_blockwise(
    x: torch.Tensor, signed: bool, quant_block: int = QUANT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (fp32) as int8-state codes and per-block absmax scales, exactly as
    the int8 step stores a moment."""
    check_quant_block(quant_block)
    x = x.detach().to(torch.float32).contiguous().reshape(-1)
    n = x.numel()
    codes = torch.empty(n, dtype=torch.uint8)
    absmax = torch.empty(-(-n // quant_block), dtype=torch.float32)
    ffi = native.ffi
    rc = native.lib.tm_quantize_blockwise(
        ffi.cast("float *", x.data_ptr()),
        n,
        quant_block,
        int(bool(signed)),
        ffi.cast("uint8_t *", codes.data_ptr()),
        ffi.cast("float *", absmax.data_ptr()),
    )
    _check(rc, "tm_quantize_blockwise")
    return codes, absmax


def dequantize_blockwise(
    codes: torch.Tensor, absmax: torch.Tensor, signed: bool, quant_block: int = QUANT_BLOCK
) -> torch.Tensor:
    """The fp32 values that int8-state ``codes`` with ``absmax`` scales stand for."""
    check_quant_block(quant_block)
    n = codes.numel()
    _require_buffer(codes, "codes", n, (torch.uint8,))
    _require_buffer(absmax, "absmax", -(-n // quant_block), (torch.float32,))
    out = torch.empty(n, dtype=torch.float32)
    ffi = native.ffi
    rc = native.lib.tm_dequantize_blockwise(
        ffi.cast("uint8_t *", codes.data_ptr()),
        ffi.cast("float *", absmax.data_ptr()),
        n,
        quant_block,
        int(bool(signed)),
        ffi.cast("float *", out.data_ptr()),
    )
    _check(rc, "tm_dequantize_blockwise")
    return out


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


def moment_state_dtype(state: dict[str, Any]) -> str:
    """Which :data:`STATE_DTYPES` entry a parameter's saved moments are in."""
    if "exp_avg_absmax" in state:
        return "int8"
    return "bf16" if state["exp_avg"].dtype == torch.bfloat16 else "fp32"


def moments_as_fp32(state: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A parameter's (exp_avg, exp_avg_sq) as flat fp32, from any state dtype."""
    kind = moment_state_dtype(state)
    if kind == "int8":
        block = int(state.get("quant_block", QUANT_BLOCK))
        codes_m = state["exp_avg"].to(torch.uint8).reshape(-1).contiguous()
        codes_v = state["exp_avg_sq"].to(torch.uint8).reshape(-1).contiguous()
        absmax_m = state["exp_avg_absmax"].to(torch.float32).contiguous()
        absmax_v = state["exp_avg_sq_absmax"].to(torch.float32).contiguous()
        return (
            dequantize_blockwise(codes_m, absmax_m, True, block),
            dequantize_blockwise(codes_v, absmax_v, False, block),
        )
    return (
        state["exp_avg"].to(torch.float32).reshape(-1).contiguous(),
        state["exp_avg_sq"].to(torch.float32).reshape(-1).contiguous(),
    )


def moments_in(
    exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, state_dtype: str, quant_block: int
) -> dict[str, Any]:
    """fp32 moments stored as ``state_dtype``: the state entries (flat for int8)."""
    if state_dtype == "fp32":  # (copies: the two moments must never share storage)
        return {
            "exp_avg": exp_avg.to(torch.float32, copy=True),
            "exp_avg_sq": exp_avg_sq.to(torch.float32, copy=True),
        }
    if state_dtype == "bf16":
        return {
            "exp_avg": exp_avg.to(torch.bfloat16),
            "exp_avg_sq": exp_avg_sq.to(torch.bfloat16),
        }
    codes_m, absmax_m = quantize_blockwise(exp_avg, True, quant_block)
    codes_v, absmax_v = quantize_blockwise(exp_avg_sq, False, quant_block)
    return {
        "exp_avg": codes_m,
        "exp_avg_sq": codes_v,
        "exp_avg_absmax": absmax_m,
        "exp_avg_sq_absmax": absmax_v,
        "quant_block": quant_block,
    }


_MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "exp_avg_absmax", "exp_avg_sq_absmax", "quant_block")


def convert_moments(state: dict[str, Any], state_dtype: str, quant_block: int) -> dict[str, Any]:
    """A parameter's moment entries in ``state_dtype`` (copies of the saved
    ones when they are already in it, so a resume is exact)."""
    same = moment_state_dtype(state) == state_dtype
    if same and (
        state_dtype != "int8" or int(state.get("quant_block", QUANT_BLOCK)) == quant_block
    ):
        return {
            k: (state[k].clone() if torch.is_tensor(state[k]) else state[k])
            for k in _MOMENT_KEYS
            if k in state
        }
    exp_avg, exp_avg_sq = moments_as_fp32(state)
    return moments_in(exp_avg, exp_avg_sq, state_dtype, quant_block)


class CPUAdam(torch.optim.Optimizer):
    """Adam/AdamW on CPU fp32 parameters with the native fused kernels.

    A drop-in for ``torch.optim.AdamW`` (``adamw_mode=True``, the default) or
    ``torch.optim.Adam`` (``adamw_mode=False``: weight decay added to the
    gradient) on CPU: param groups, LR schedulers, ``zero_grad`` and
    ``state_dict``/``load_state_dict`` behave the same, and the per-parameter
    state is torch's (``step`` as a float32 scalar tensor, ``exp_avg``,
    ``exp_avg_sq``), so a state dict loads into either class and back.

    Parameters must be contiguous fp32 or bf16 CPU tensors; gradients may be
    fp32, bf16 or fp16. A bf16 parameter gets an fp32 master copy in its state
    (``"master"``), updated by the kernel, which writes the rounded result
    back into the parameter (as DeepSpeed's CPU Adam does). ``amsgrad`` and
    ``maximize`` are not supported.

    ``state_dtype`` stores the moments as fp32 (torch's layout), bf16, or
    int8 (uint8 codes, flat, plus ``exp_avg_absmax``/``exp_avg_sq_absmax``
    per ``quant_block`` elements and ``quant_block`` itself). It is kept per
    param group; :meth:`load_state_dict` converts saved moments of another
    state dtype to this optimizer's, and copies those of the same one as they
    are (an exact resume).

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
        state_dtype: str = "fp32",
        quant_block: int = QUANT_BLOCK,
    ) -> None:
        check_state_dtype(state_dtype)
        check_quant_block(quant_block)
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
            state_dtype=state_dtype,
            quant_block=quant_block,
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
        """Load a state dict saved by CPUAdam, ``torch.optim.Adam`` or ``torch.optim.AdamW``.

        The moments end up in this optimizer's state dtypes (converted when
        saved in another one); an fp32 master is kept as saved, or made from a
        bf16 parameter when the save had none.

        [Note: torch's loader casts every floating state tensor to its
        parameter's dtype (uint8 codes and bf16 moments would become fp32, an
        fp32 master bf16), so the moments and master are rebuilt here from the
        caller's untouched dict; the state dtype is this optimizer's choice,
        not the checkpoint's.]
        """
        wanted = [(g["state_dtype"], g["quant_block"]) for g in self.param_groups]
        super().load_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        for group, saved_group, (state_dtype, block) in zip(
            self.param_groups, saved_groups, wanted, strict=True
        ):
            # torch's loader keeps only the saved groups' keys; fill in ours
            group.setdefault("decoupled_weight_decay", self.defaults["decoupled_weight_decay"])
            group.setdefault("bias_correction", True)
            group["state_dtype"], group["quant_block"] = state_dtype, block
            for p, pid in zip(group["params"], saved_group["params"], strict=True):
                saved = state_dict["state"].get(pid)
                if saved is None or "exp_avg" not in saved:
                    continue
                state = self.state[p]
                for key in _MOMENT_KEYS:
                    state.pop(key, None)
                state.update(self._shaped(p, convert_moments(saved, state_dtype, block)))
                if "master" in saved:
                    state["master"] = saved["master"].to(torch.float32).clone()
                elif p.dtype == torch.bfloat16:
                    state["master"] = p.detach().to(torch.float32)

    @staticmethod
    def _shaped(p: torch.Tensor, moments: dict[str, Any]) -> dict[str, Any]:
        if moments["exp_avg"].dtype != torch.uint8:
            for key in ("exp_avg", "exp_avg_sq"):
                moments[key] = moments[key].reshape(p.shape).contiguous()
        return moments

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
        if p.device.type != "cpu" or p.dtype not in _PARAM_DTYPES or not p.is_contiguous():
            raise ValueError(
                "CPUAdam needs contiguous float32 or bfloat16 CPU parameters "
                f"(got {p.dtype} on {p.device}, contiguous={p.is_contiguous()})"
            )
        if not grad.is_contiguous():
            grad = grad.contiguous()
        state_dtype = group.get("state_dtype", "fp32")
        block = int(group.get("quant_block", QUANT_BLOCK))
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            zeros = torch.zeros(p.numel(), dtype=torch.float32)
            state.update(self._shaped(p, moments_in(zeros, zeros.clone(), state_dtype, block)))
        elif moment_state_dtype(state) != state_dtype or (
            state_dtype == "int8" and state.get("quant_block") != block
        ):
            # the group's state_dtype was changed after states were made
            converted = self._shaped(p, convert_moments(state, state_dtype, block))
            for key in _MOMENT_KEYS:
                state.pop(key, None)
            state.update(converted)
        if p.dtype == torch.bfloat16 and "master" not in state:
            state["master"] = p.detach().to(torch.float32)
        if not torch.is_tensor(state["step"]):
            state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        for key in ("exp_avg", "exp_avg_sq"):
            if not state[key].is_contiguous():
                state[key] = state[key].contiguous()
        state["step"] += 1
        master = state["master"] if p.dtype == torch.bfloat16 else p.data
        adam_step(
            master.reshape(-1),
            state["exp_avg"].reshape(-1),
            state["exp_avg_sq"].reshape(-1),
            grad.reshape(-1),
            step=int(state["step"].item()),
            lr=lr,
            betas=betas,
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            adamw_mode=bool(group["decoupled_weight_decay"]),
            bias_correction=bool(group["bias_correction"]),
            simd=self.simd,
            threads=self.threads,
            param_out=p.data.reshape(-1) if p.dtype == torch.bfloat16 else None,
            exp_avg_absmax=state.get("exp_avg_absmax"),
            exp_avg_sq_absmax=state.get("exp_avg_sq_absmax"),
            quant_block=block,
        )


_PARAM_DTYPES = (torch.float32, torch.bfloat16)


def quant_codes(x: torch.Tensor, signed: bool, *, simd: str | None = None) -> torch.Tensor:
    """Codes of normalized values ``x`` (fp32) with one kernel set's quantizer
    (every set gives the same codes; for tests)."""
    x = x.detach().to(torch.float32).contiguous().reshape(-1)
    codes = torch.empty(x.numel(), dtype=torch.uint8)
    ffi = native.ffi
    rc = native.lib.tm_quant_codes(
        _simd_code(simd),
        ffi.cast("float *", x.data_ptr()),
        x.numel(),
        int(bool(signed)),
        ffi.cast("uint8_t *", codes.data_ptr()),
    )
    _check(rc, "tm_quant_codes")
    return codes
