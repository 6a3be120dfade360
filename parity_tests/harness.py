"""The one parity recipe, generic over the registry.

A torch reference is built, its ``state_dict`` is loaded into the Flax twin, both get the
same inputs (layout-transposed), and outputs, returned states, buffers, gradients with
respect to every parameter and every float input, and optimizer steps are compared in
torch's names and layouts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import flax_arch
import torch_ref
from flax_arch import registry
from flax_arch.interop import to_channels_last
from parity_tests.tolerances import ADAM_LR, adam_eps, tolerance

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

# Largest relative error seen per (family, dtype, what), reported at the end of the run.
ERRORS: dict[tuple[str, str, str], float] = {}


def assert_close(actual, expected, tol: float, what: str, record: tuple[str, str] | None = None):
    """``max|actual - expected| <= tol * max(1, max|expected|)``, NaNs never equal."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)) == np.all(np.isfinite(expected)), f"{what}: non-finite"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
    if record is not None:
        key = (*record, what.split(" ")[0])
        ERRORS[key] = max(ERRORS.get(key, 0.0), err / scale)
    assert err <= tol * scale, f"{what}: max|diff| = {err:.3e} > {tol:.0e} * {scale:.3g}"


def torch_leaves(out) -> list[torch.Tensor]:
    """Flattens nested tuples of tensors in ``jax.tree.leaves`` order."""
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in torch_leaves(o)]
    return [out]


class Pair:
    """A torch model and its Flax twin holding the same weights, in the same mode."""

    def __init__(self, name: str, dtype=np.float64, size: str = "test", *, seed: int = 0,
                 train: bool = True, batch_size: int | None = None, **overrides):
        self.entry = entry = flax_arch.get_entry(name)
        kwargs = {**entry.config(size).kwargs, **overrides}
        torch.manual_seed(seed)
        torch_model = torch_ref.get_model(name, **kwargs)
        flax_model = flax_arch.get_model(name, rngs=nnx.Rngs(seed), param_dtype=np.dtype(dtype),
                                         **kwargs)
        cfg = entry.config(size)
        torch_in, _, target = entry.example_inputs(size, batch_size=batch_size, dtype=dtype,
                                                   seed=seed + 1)
        self._setup(torch_model, flax_model, torch_in, cfg.inputs, entry.outputs, dtype,
                    entry.family, train, entry.loss, target,
                    cfg.target.layout if cfg.target is not None else None)

    @classmethod
    def of_modules(cls, torch_model, flax_model, torch_inputs, input_layouts, output_layouts,
                   dtype=np.float64, *, family: str = "layer", train: bool = True) -> Pair:
        """A pair of unregistered modules (leaf layers, sweeps): the torch weights are copied
        into ``flax_model``; inputs are NumPy arrays in torch's layout."""
        self = cls.__new__(cls)
        inputs = [registry.Input(np.shape(a), lay, "normal" if np.issubdtype(np.asarray(a).dtype,
                  np.floating) else "index") for a, lay in zip(torch_inputs, input_layouts)]
        self._setup(torch_model, flax_model, tuple(np.asarray(a) for a in torch_inputs), inputs,
                    tuple(output_layouts), dtype, family, train, None, None, None)
        return self

    def _setup(self, torch_model, flax_model, torch_in, inputs, output_layouts, dtype, family,
               train, loss, target, target_layout):
        self.dtype = np.dtype(dtype)
        self.tol = tolerance(self.dtype, family)
        self.record = (family, self.dtype.name)
        self.torch = torch_model.to(TORCH_DTYPES[self.dtype])
        self.flax = flax_model
        flax_arch.load_torch_state_dict(self.flax, self.torch.state_dict())
        self.torch.train(train)
        self.flax.train() if train else self.flax.eval()
        self.layouts = [i.layout for i in inputs]
        self.diff = [i.differentiable for i in inputs]
        self.torch_in = tuple(a.astype(self.dtype) if np.issubdtype(a.dtype, np.floating) else a
                              for a in torch_in)
        self.flax_in = tuple(to_channels_last(a, lay) for a, lay in zip(self.torch_in, self.layouts))
        self.output_layouts = output_layouts
        self.loss, self.target, self.target_layout = loss, target, target_layout

    # ------------------------------------------------------------------ running

    def torch_inputs(self, requires_grad: bool = False) -> list[torch.Tensor]:
        return [torch.from_numpy(a.copy()).requires_grad_(requires_grad and d)
                for a, d in zip(self.torch_in, self.diff)]

    def flax_target(self):
        return jnp.asarray(to_channels_last(self.target, self.target_layout))

    def to_flax_layout(self, torch_outs) -> list[np.ndarray]:
        assert len(torch_outs) == len(self.output_layouts), "output count != output layouts"
        return [to_channels_last(t.detach().numpy(), lay)
                for t, lay in zip(torch_outs, self.output_layouts)]

    def cotangents(self, torch_outs, seed: int = 123) -> tuple[list, list]:
        """Random output cotangents: a loss sum(out * g) that reaches every output."""
        rng = np.random.default_rng(seed)
        gs = [rng.standard_normal(tuple(t.shape)).astype(self.dtype) for t in torch_outs]
        flax_gs = [jnp.asarray(to_channels_last(g, lay)) for g, lay in zip(gs, self.output_layouts)]
        return [torch.from_numpy(g) for g in gs], flax_gs

    # ------------------------------------------------------------------ checks

    def check_state(self, what: str = "state"):
        """Parameters and buffers, in torch names and layouts."""
        ours = flax_arch.torch_state_dict(self.flax)
        ref = self.torch.state_dict()
        assert set(ours) == set(ref), f"{what}: keys differ: {set(ours) ^ set(ref)}"
        for key, value in ref.items():
            assert_close(ours[key], value.numpy(), self.tol, f"{what} {key}", self.record)

    def check_forward(self):
        """Outputs and buffers after one train- or eval-mode call, without gradients."""
        with torch.no_grad():
            t_out = torch_leaves(self.torch(*self.torch_inputs()))
        f_out = jax.tree.leaves(self.flax(*map(jnp.asarray, self.flax_in)))
        for i, (ours, ref) in enumerate(zip(f_out, self.to_flax_layout(t_out))):
            assert_close(ours, ref, self.tol, f"output {i}", self.record)
        self.check_state("buffers after the call")

    def check_forward_and_gradients(self):
        """Outputs, returned states, buffers after the call, and gradients of every parameter
        and float input, through one train- or eval-mode call."""
        self.torch.zero_grad(set_to_none=True)
        t_in = self.torch_inputs(requires_grad=True)
        t_out = torch_leaves(self.torch(*t_in))
        t_gs, f_gs = self.cotangents(t_out)
        sum(torch.sum(o * g) for o, g in zip(t_out, t_gs)).backward()

        diff_idx = [i for i, d in enumerate(self.diff) if d]

        def loss_fn(model, diff_inputs):
            xs = list(map(jnp.asarray, self.flax_in))
            for i, x in zip(diff_idx, diff_inputs):
                xs[i] = x
            outs = jax.tree.leaves(model(*xs))
            return sum(jnp.sum(o * g) for o, g in zip(outs, f_gs)), outs

        diff_in = tuple(jnp.asarray(self.flax_in[i]) for i in diff_idx)
        (_, f_out), (p_grads, x_grads) = nnx.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            self.flax, diff_in)

        for i, (ours, ref) in enumerate(zip(f_out, self.to_flax_layout(t_out))):
            assert_close(ours, ref, self.tol, f"output {i}", self.record)
        self.check_state("buffers after the call")
        ours = flax_arch.torch_state_dict(self.flax, p_grads)
        ref = {n: p.grad for n, p in self.torch.named_parameters()}
        assert set(ours) == set(ref), f"parameter names differ: {set(ours) ^ set(ref)}"
        for key, g in ref.items():
            g = np.zeros(ours[key].shape, self.dtype) if g is None else g.numpy()
            assert_close(ours[key], g, self.tol, f"grad {key}", self.record)
        for i, g in zip(diff_idx, x_grads):
            ref = to_channels_last(t_in[i].grad.numpy(), self.layouts[i])
            assert_close(g, ref, self.tol, f"grad input {i}", self.record)

    def check_optimizer_steps(self, optimizer: str, steps: int = 2, lr: float = 1e-2):
        """``steps`` training steps on the registry's loss with SGD+momentum or Adam; losses,
        then parameters and buffers, compared."""
        self.optimizer_steps(optimizer, steps, lr, check_losses=True)
        self.check_state(f"{optimizer} step")

    def optimizer_steps(self, optimizer: str, steps: int = 2, lr: float = 1e-2, *,
                        check_losses: bool = False):
        """Runs ``steps`` training steps on both sides (Adam at ADAM_LR and adam_eps)."""
        if optimizer == "sgd":
            t_opt = torch.optim.SGD(self.torch.parameters(), lr=lr, momentum=0.9)
            tx = optax.sgd(lr, momentum=0.9)
        elif optimizer == "adam":
            lr, eps = ADAM_LR, adam_eps(self.dtype)
            t_opt = torch.optim.Adam(self.torch.parameters(), lr=lr, eps=eps)
            tx = optax.adam(lr, eps=eps)
        else:
            raise ValueError(optimizer)
        f_opt = nnx.Optimizer(self.flax, tx, wrt=nnx.Param)
        t_target = torch.from_numpy(self.target)
        f_target = self.flax_target()
        f_in = list(map(jnp.asarray, self.flax_in))
        name = self.loss

        def loss_fn(model):
            return flax_arch.task_loss(name, model(*f_in), f_target)

        for step in range(steps):
            t_opt.zero_grad()
            t_loss = torch_ref.task_loss(name, self.torch(*self.torch_inputs()), t_target)
            t_loss.backward()
            t_opt.step()
            f_loss, grads = nnx.value_and_grad(loss_fn)(self.flax)
            f_opt.update(self.flax, grads)
            if check_losses:
                assert_close(f_loss, t_loss.detach().numpy(), self.tol, f"loss step {step}",
                             self.record)
