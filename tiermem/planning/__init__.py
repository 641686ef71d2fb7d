"""The planner: where a model's training state fits on this machine, and how fast a step runs.

* :mod:`tiermem.planning.shapes`: the model as plain numbers (a GPT shape, a
  parameter count, or a Hugging Face ``config.json``);
* :mod:`tiermem.planning.machine`: memory per tier and measured rates;
* :mod:`tiermem.planning.estimate`: bytes per tier, fit and step time of each
  placement, and the recommended config.

Used by ``tiermem plan`` and by the engine's ``"auto"`` offload placement.

[Note: core code: it takes plain numbers and dataclasses and never imports
``tiermem.engine`` (the engine imports it) nor ``tiermem.train``.]
"""

from tiermem.planning.estimate import (
    PLACEMENTS,
    Placement,
    PlacementEstimate,
    Plan,
    PlanSettings,
    estimate,
    plan,
    recommended_config,
)
from tiermem.planning.machine import MachineFacts, probe_machine
from tiermem.planning.shapes import (
    ModelShape,
    ShapeError,
    counted_shape,
    gpt_shape,
    hf_config_shape,
)

__all__ = [
    "PLACEMENTS",
    "MachineFacts",
    "ModelShape",
    "Placement",
    "PlacementEstimate",
    "Plan",
    "PlanSettings",
    "ShapeError",
    "counted_shape",
    "estimate",
    "gpt_shape",
    "hf_config_shape",
    "plan",
    "probe_machine",
    "recommended_config",
]
