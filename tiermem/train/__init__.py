"""``tiermem train``: a GPT-style byte-level LM trained with ZeRO stage 3 and NVMe offload.

* :mod:`tiermem.train.models`: the model and its size presets;
* :mod:`tiermem.train.corpus`: the built-in text (standard-library docstrings) and batches;
* :mod:`tiermem.train.run_config`: the engine config of a run;
* :mod:`tiermem.train.loop`: the run itself (:func:`~tiermem.train.loop.train`);
* :mod:`tiermem.train.report`: summary, ``run.json``, Chrome trace and PNG plots.

[Note: this package is CLI-level code inside the core package: it imports
the engine (``tiermem.engine``), which sits above the core. Only
``tiermem.cli`` imports it; no core module (``tiermem.aio``,
``tiermem.buffers``, ``tiermem.adam``, ``tiermem.store`` ...) may, or the
layers would point both ways. Nothing is imported here, so importing
``tiermem.train.models`` alone does not pull in the engine.]
"""
