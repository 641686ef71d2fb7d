"""``TiermemTrainer``: the Hugging Face ``Trainer`` with the tiermem engine doing the training step.

Example::

    from transformers import TrainingArguments
    from tiermem.hf import TiermemTrainer

    args = TrainingArguments(output_dir="out", per_device_train_batch_size=8, bf16=True)
    trainer = TiermemTrainer(model=model, args=args, train_dataset=ds,
                             tiermem_config="ds_config.json")   # "auto" values allowed
    trainer.train()                      # later: trainer.train(resume_from_checkpoint=True)

What changes against the plain Trainer, hook by hook (transformers 5.24):

* the engine is built by ``tiermem.initialize`` from the model and the JSON
  resolved against ``TrainingArguments`` (:func:`tiermem.hf.resolve_trainer_config`)
  when training starts (``create_optimizer_and_scheduler``), with the Trainer's
  two param groups (``weight_decay`` only on ``get_decay_parameter_names``, not
  on biases and norm weights); the optimizer is the
  engine's, the LR scheduler the JSON's ``scheduler`` or else the Trainer's own
  (``lr_scheduler_type``) over the engine's optimizer;
* ``_prepare_for_training`` runs no ``accelerator.prepare`` on the model or the
  optimizer, ``_move_model_to_device`` does nothing and ``_wrap_model`` never
  wraps (no DataParallel/DDP): the engine places and shards the parameters;
* accelerate's mixed precision is off (``_build_accelerator_args``): the
  engine's ``fp16``/``bf16`` (from ``args.fp16``/``args.bf16``) casts and
  scales, and accelerate's autocast or GradScaler would fight it;
* ``training_step`` calls ``engine.backward``; the Trainer's loop then calls the
  engine optimizer's ``step`` (which clips to ``gradient_clipping``, i.e.
  ``max_grad_norm``, and skips fp16 overflow steps) and ``zero_grad``; the
  pre-step gradient norm is therefore not logged, and the LR scheduler still
  steps after an fp16 step the engine skipped (the Trainer cannot tell);
* checkpoints: ``checkpoint-N/tiermem/`` holds the engine's checkpoint (weights,
  fp32 master weights, Adam moments, counters, loss scale, every rank's RNG
  states, safetensors + JSON, atomic), with the Trainer's LR scheduler state as
  its client state; ``checkpoint-N/`` still gets ``trainer_state.json`` and the
  consolidated weights as a ``save_pretrained`` folder, and no pickled
  optimizer, scheduler or RNG files. ``train(resume_from_checkpoint=...)``
  loads the engine's checkpoint (any rank count, stage or placement).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import Trainer

import tiermem
from tiermem.engine.checkpoint import restore_rank_rng
from tiermem.engine.checkpoint_format import CheckpointError, read_manifest, resolve_checkpoint
from tiermem.hf.config import resolve_trainer_config

__all__ = ["TIERMEM_CHECKPOINT_DIR", "TiermemTrainer"]

logger = logging.getLogger("tiermem.hf")

#: The engine's checkpoint inside each of the Trainer's ``checkpoint-N`` folders.
TIERMEM_CHECKPOINT_DIR = "tiermem"

# [Note: the Trainer methods overridden here, some private. They are checked at
#  construction so that a transformers release that renamed one fails loudly
#  instead of silently running the plain Trainer's version.]
_HOOKS = (
    "_build_accelerator_args",
    "_move_model_to_device",
    "_wrap_model",
    "_prepare_for_training",
    "create_optimizer_and_scheduler",
    "create_optimizer",
    "create_scheduler",
    "training_step",
    "_clip_grad_norm",
    "_get_grad_norm",
    "save_model",
    "_save_optimizer_and_scheduler",
    "_save_rng_state",
    "_load_from_checkpoint",
    "_load_rng_state",
    "_load_best_model",
)


class _ManagedModel:
    """What the Trainer's loop gets as ``model``: the engine, with the bits of ``nn.Module``
    the loop calls (``train``, ``zero_grad``, ``parameters``...).

    [Note: not an ``nn.Module`` itself, so nothing can ``.to()`` or wrap it;
    ``zero_grad`` must reach the engine, whose gradients live in its own
    accumulators, not in ``param.grad``. Other attributes (``config``,
    ``training``...) are the model's.]
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def train(self, mode: bool = True) -> _ManagedModel:
        self.engine.train(mode)
        return self

    def eval(self) -> _ManagedModel:
        self.engine.eval()
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.engine.zero_grad()

    def __getattr__(self, name: str) -> Any:
        if name == "engine":  # not set yet (copy/pickle build the object without __init__)
            raise AttributeError(name)
        return getattr(self.engine.module, name)


class TiermemTrainer(Trainer):
    """A ``transformers.Trainer`` whose training step, checkpoints and parameter placement are
    tiermem's (see the module docstring for each hook).

    Args:
        model: the model (a ``PreTrainedModel`` or any ``nn.Module`` the Trainer
            accepts); ``model_init`` is not supported.
        args: the ``TrainingArguments``; ``deepspeed`` must be unset.
        tiermem_config: the tiermem/DeepSpeed JSON config (a dict or a file
            path), ``"auto"`` values allowed.
        **kwargs: the Trainer's other arguments, except ``optimizers`` (the
            optimizer is the engine's).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Any = None,
        *,
        tiermem_config: Any,
        **kwargs: Any,
    ) -> None:
        missing = [name for name in _HOOKS if not hasattr(Trainer, name)]
        if missing:
            import transformers

            raise ImportError(
                f"TiermemTrainer needs Trainer.{', Trainer.'.join(missing)}, which transformers "
                f"{transformers.__version__} lacks; install tiermem[hf] (transformers>=5.24,<6)"
            )
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model: expected a torch.nn.Module, got {type(model).__name__} "
                "(model_init is not supported)"
            )
        if kwargs.get("model_init") is not None:
            raise ValueError("model_init: not supported by TiermemTrainer; pass model")
        if any(o is not None for o in kwargs.get("optimizers", (None, None))):
            raise ValueError(
                "optimizers: TiermemTrainer trains with the engine's optimizer; configure it "
                'in tiermem_config ("optimizer", "scheduler") or through TrainingArguments'
            )
        if args is not None and getattr(args, "deepspeed", None):
            raise ValueError(
                "TrainingArguments.deepspeed: pass the JSON as tiermem_config instead; "
                "tiermem replaces DeepSpeed here"
            )
        if args is not None and (args.fp16_full_eval or args.bf16_full_eval):
            raise ValueError(
                "TrainingArguments.fp16_full_eval/bf16_full_eval: not supported; evaluation "
                'runs in the engine\'s precision (the config\'s "fp16"/"bf16")'
            )
        if tiermem_config is None:
            raise ValueError("tiermem_config: pass a dict or the path of a JSON config")
        self.tiermem_config = tiermem_config
        self.engine: Any = None
        self._managed: _ManagedModel | None = None
        super().__init__(model=model, args=args, **kwargs)

    # -- placement: the engine's, not the Trainer's or accelerate's -------------------------
    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        accelerator_args = super()._build_accelerator_args(**kwargs)
        accelerator_args["mixed_precision"] = "no"  # the engine's precision, see module doc
        return accelerator_args

    def _move_model_to_device(self, model: nn.Module, device: torch.device) -> None:
        # the engine moves each parameter (or its shard) to its tier itself
        return None

    def _wrap_model(self, model: Any, training: bool = True, dataloader: Any = None) -> Any:
        # [Note: never DataParallel/DDP (the engine reduces the gradients). Once
        #  the engine exists, evaluation runs through it too: a model that "is
        #  not self.model" is also what keeps evaluation_loop from handing the
        #  managed model to accelerate's prepare_model (which moves it).]
        return self._managed if self._managed is not None else model

    # -- the engine, its optimizer and the LR scheduler ------------------------------------
    def _build_engine(self, num_training_steps: int) -> None:
        config = resolve_trainer_config(
            self.tiermem_config, self.args, num_training_steps=num_training_steps
        )
        weight_decay = float(config["optimizer"]["params"]["weight_decay"])
        engine, optimizer, _, _ = tiermem.initialize(
            model=self.model,
            config=config,
            model_parameters=self._param_groups(weight_decay),
        )
        self.engine = engine
        self.optimizer = optimizer
        self._managed = _ManagedModel(engine)

    def _param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The plain Trainer's two param groups: ``weight_decay`` for the parameters
        ``get_decay_parameter_names`` names, 0 for the rest (biases, norm weights).

        [Note: frozen parameters are left out (the engine keeps them as frozen
        groups), and so is an empty group: a model without biases or norms gets
        one. The engine steps each range of a module's shard with its own
        group's hyperparameters, whatever the optimizer's placement.]
        """
        decay = set(self.get_decay_parameter_names(self.model))
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        """Build the engine (once) and the LR scheduler for ``num_training_steps``."""
        if self.engine is None:
            self._build_engine(num_training_steps)
        self.create_scheduler(num_training_steps)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The engine's optimizer (built with it by :meth:`create_optimizer_and_scheduler`)."""
        if self.engine is None:
            raise RuntimeError(
                "the optimizer is the tiermem engine's; it is built by train() or "
                "create_optimizer_and_scheduler(num_training_steps)"
            )
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Any:
        """The config's ``scheduler`` if any, else the Trainer's over the engine's optimizer."""
        if self.lr_scheduler is None:
            if self.engine.lr_scheduler is not None:
                self.lr_scheduler = self.engine.lr_scheduler
            else:
                super().create_scheduler(num_training_steps, optimizer=self.engine.optimizer)
        return self.lr_scheduler

    def _prepare_for_training(
        self, max_steps: int, train_dataloader: Any, resume_from_checkpoint: str | None
    ) -> tuple[Any, Any]:
        if self._created_lr_scheduler:  # its step counts may differ in this train() call
            self.lr_scheduler = None
            self._created_lr_scheduler = False
        self.create_optimizer_and_scheduler(max_steps)
        model = self._wrap_model(self.model_wrapped)
        self.model_wrapped = model
        if resume_from_checkpoint is not None:
            self._load_tiermem_checkpoint(resume_from_checkpoint)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))
        self.callback_handler.train_dataloader = train_dataloader
        return model, train_dataloader

    # -- the step ---------------------------------------------------------------------------
    def training_step(
        self,
        model: Any,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Forward and ``engine.backward``; the loop then steps the engine's optimizer."""
        if model is not self._managed:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        del inputs
        # the Trainer's rule for whether the loss is already normalised over the window
        scaled_for_window = self.loss_is_scaled_for_ga
        if scaled_for_window is None:
            scaled_for_window = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        if not scaled_for_window:
            loss = loss / self.current_gradient_accumulation_steps
        self.engine.backward(loss, scale_wrt_gas=False)
        # [Note: the engine counts micro-steps only in its own step(), which the
        #  Trainer's loop does not call (it steps the optimizer itself). Counted
        #  here, and rounded up to a whole window at the window's last micro-batch
        #  (an epoch may end with a short window), so that the engine's store
        #  passes start at window starts and its checkpoints see a step boundary.]
        engine = self.engine
        engine.micro_steps += 1
        if self.accelerator.sync_gradients:
            window = engine.gradient_accumulation_steps
            engine.micro_steps = -(-engine.micro_steps // window) * window
        return loss.detach()

    def _clip_grad_norm(self, model: Any) -> None:
        if model is not self._managed:
            return super()._clip_grad_norm(model)
        return None  # the engine clips inside its optimizer step (gradient_clipping)

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        if model is not self._managed:
            return super()._get_grad_norm(model, grad_norm)
        return grad_norm

    # -- checkpoints ------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the consolidated weights as a ``save_pretrained`` folder (a collective).

        Also the processing class, and the arguments as ``training_args.json``.

        [Note: the weights are gathered into host memory here, as
        ``save_pretrained`` needs a state dict; the engine's own checkpoint
        (``_save_optimizer_and_scheduler``) streams instead. The Trainer's
        ``_save`` is not used: it pickles the arguments (``training_args.bin``),
        and tiermem's checkpoints hold no pickle.]
        """
        if self.engine is None:
            return super().save_model(output_dir, _internal_call)
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        state_dict = self.engine.full_state_dict()
        if self.args.should_save:
            output_dir.mkdir(parents=True, exist_ok=True)
            if hasattr(self.model, "save_pretrained"):
                self.model.save_pretrained(output_dir, state_dict=state_dict)
            else:
                save_file(state_dict, output_dir / "model.safetensors", metadata={"format": "pt"})
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            (output_dir / "training_args.json").write_text(self.args.to_json_string())
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.engine is None:
            return super()._save_optimizer_and_scheduler(output_dir)
        own = self.lr_scheduler is not None and self.lr_scheduler is not self.engine.lr_scheduler
        client_state = {"trainer_lr_scheduler": self.lr_scheduler.state_dict() if own else None}
        self.engine.save_checkpoint(
            Path(output_dir) / TIERMEM_CHECKPOINT_DIR, client_state=client_state
        )

    def _save_rng_state(self, output_dir: str) -> None:
        if self.engine is None:
            return super()._save_rng_state(output_dir)
        return None  # every rank's RNG states are in the engine's checkpoint

    def _engine_checkpoint(self, checkpoint: str | os.PathLike) -> Path:
        root = Path(checkpoint) / TIERMEM_CHECKPOINT_DIR
        if not root.is_dir():
            raise CheckpointError(
                f"{checkpoint}: not a TiermemTrainer checkpoint (no {TIERMEM_CHECKPOINT_DIR}/ "
                "folder with the engine's state)"
            )
        return root

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        # [Note: train() calls this before the engine exists; the state is loaded
        #  into the engine by _prepare_for_training. Checked here to fail early.]
        self._engine_checkpoint(resume_from_checkpoint)

    def _load_tiermem_checkpoint(self, checkpoint: str | os.PathLike) -> None:
        _, client_state = self.engine.load_checkpoint(self._engine_checkpoint(checkpoint))
        saved = (client_state or {}).get("trainer_lr_scheduler")
        if saved is not None and self.lr_scheduler is not self.engine.lr_scheduler:
            self.lr_scheduler.load_state_dict(saved)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        # [Note: the Trainer restores the RNG after re-creating the data iterator
        #  (which draws from it), so the engine's saved states are set again here.]
        if checkpoint is None or self.engine is None:
            return super()._load_rng_state(checkpoint)
        manifest = read_manifest(resolve_checkpoint(self._engine_checkpoint(checkpoint), None))
        restore_rank_rng(manifest, self.engine.comm.rank)

    def _load_best_model(self) -> None:
        if self.engine is None:
            return super()._load_best_model()
        self.engine.load_checkpoint(self._engine_checkpoint(self.state.best_model_checkpoint))
