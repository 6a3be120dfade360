"""Training: :mod:`~flax_arch.training.trainer` (the run: ``Trainer``, ``TrainConfig``,
``train``), :mod:`~flax_arch.training.tasks` (one class per registry task),
:mod:`~flax_arch.training.data` (digits or your arrays, shaped for a model),
:mod:`~flax_arch.training.checkpoint` (Orbax checkpoints) and
:mod:`~flax_arch.training.gan` (the adversarial step).

Nothing is imported here: ``import flax_arch`` needs none of the training extra (Orbax,
scikit-learn, matplotlib, tqdm).
"""
