"""The arithmetic of a DDPM's noising process that every diffusion attack reads, as pure functions.

``alpha_bar`` is the cumulative product ᾱ_t of the schedule at a timestep (``scheduler.alphas_cumprod``).
The functions take plain numbers, numpy arrays or torch tensors alike: only ``+ - * /`` and ``** 0.5``
are used, and per-image reductions go through ``reshape`` and ``mean``/``sum``, which both libraries have.

Notation follows Ho et al. 2020 ("Denoising Diffusion Probabilistic Models") and Song et al. 2021
("Denoising Diffusion Implicit Models"): x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε.
"""

from __future__ import annotations

from typing import Any

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def noised(x0: Any, eps: Any, alpha_bar: float) -> Any:
    """x_t from a clean image and its noise: √ᾱ·x0 + √(1−ᾱ)·ε.

    >>> round(noised(1.0, 0.0, 0.64), 6), round(noised(0.0, 1.0, 0.64), 6)
    (0.8, 0.6)
    """
    return alpha_bar**0.5 * x0 + (1.0 - alpha_bar) ** 0.5 * eps


def predicted_x0(x_t: Any, eps: Any, alpha_bar: float) -> Any:
    """The clean image a noise estimate implies: (x_t − √(1−ᾱ)·ε) / √ᾱ (inverts :func:`noised`).

    >>> round(predicted_x0(noised(0.3, -1.2, 0.5), -1.2, 0.5), 9)
    0.3
    """
    return (x_t - (1.0 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


def ddim_step(x_t: Any, eps: Any, alpha_from: float, alpha_to: float) -> Any:
    """One deterministic DDIM step (η = 0) from noise level ᾱ_from to ᾱ_to with the noise estimate ε.

    The same formula goes both ways: towards more noise (ᾱ_to < ᾱ_from) it is the DDIM inversion step,
    towards less the DDIM sampling step. With the true noise it lands exactly on x at the new level.

    >>> x0, eps = 0.5, 0.8
    >>> round(ddim_step(noised(x0, eps, 0.9), eps, 0.9, 0.4), 9) == round(noised(x0, eps, 0.4), 9)
    True
    """
    return noised(predicted_x0(x_t, eps, alpha_from), eps, alpha_to)


def epsilon_from_output(output: Any, x_t: Any, alpha_bar: float, prediction_type: str) -> Any:
    """The noise estimate ε from what the network predicts (``scheduler.config.prediction_type``).

    ``epsilon``: the output itself; ``v_prediction`` (Salimans & Ho 2022): v = √ᾱ·ε − √(1−ᾱ)·x0, so
    ε = √ᾱ·v + √(1−ᾱ)·x_t; ``sample``: the output is x0, so ε = (x_t − √ᾱ·x0) / √(1−ᾱ).

    >>> x0, eps, a = 0.2, -0.7, 0.36
    >>> x_t = noised(x0, eps, a)
    >>> v = a**0.5 * eps - (1 - a) ** 0.5 * x0
    >>> outputs = ((eps, "epsilon"), (v, "v_prediction"), (x0, "sample"))
    >>> [round(epsilon_from_output(o, x_t, a, kind), 9) for o, kind in outputs]
    [-0.7, -0.7, -0.7]
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha_bar**0.5 * output + (1.0 - alpha_bar) ** 0.5 * x_t
    if prediction_type == "sample":
        return (x_t - alpha_bar**0.5 * output) / (1.0 - alpha_bar) ** 0.5
    raise ValueError(f"unknown prediction type {prediction_type!r}; known: {', '.join(PREDICTION_TYPES)}")


def per_image_mse(a: Any, b: Any) -> Any:
    """Mean squared difference of each image (first axis) over its channels and pixels.

    >>> import numpy as np
    >>> per_image_mse(np.zeros((2, 1, 2, 2)), np.array([[[[1, 1], [1, 1]]], [[[0, 0], [0, 2]]]])).tolist()
    [1.0, 1.0]
    """
    difference = a - b
    return (difference * difference).reshape(difference.shape[0], -1).mean(1)


def per_image_lp(a: Any, b: Any, p: float) -> Any:
    """The ℓp norm of each image's difference (first axis), ``(Σ |a − b|^p)^(1/p)``.

    >>> import numpy as np
    >>> per_image_lp(np.zeros((1, 1, 1, 2)), np.array([[[[3.0, 4.0]]]]), 2).tolist()
    [5.0]
    """
    difference = abs(a - b) ** p
    return difference.reshape(difference.shape[0], -1).sum(1) ** (1.0 / p)


def scaled_timestep(t: int, num_train_timesteps: int, reference: int = 1000) -> int:
    """A timestep given on a ``reference``-step schedule, at the same point of a schedule of another length.

    The papers' settings are for 1,000 training timesteps; a 200-step model's t = 100 is the same noise
    fraction as t = 500 of 1,000 only in name, so settings are read as fractions of the schedule.

    >>> scaled_timestep(100, 1000), scaled_timestep(100, 200), scaled_timestep(999, 50)
    (100, 20, 49)
    """
    return min(max(round(t * num_train_timesteps / reference), 0), num_train_timesteps - 1)
