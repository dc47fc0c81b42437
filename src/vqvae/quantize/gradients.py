"""How a gradient crosses a quantizer, and the squared error of its losses: three autograd functions whose
forward passes return exact values (the code vectors bit for bit) and whose backward passes are the
formulas the tests transcribe in NumPy."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RotationTrick", "SquaredError", "StraightThrough"]

# rows of the squared error summed at once (a cache-sized temporary instead of an (N, D) one)
_ERROR_ROWS = 4096
# guard of the rotation trick's divisions (as lucidrains' ``safe_div``)
_TINY = 1e-6


class StraightThrough(torch.autograd.Function):
    """Forward: the code vectors, exactly. Backward: the gradient goes to the encoder output.

    Same value and gradient as the reference ``x + sg[e - x]`` but without its rounding error,
    so ``lookup(indices)`` equals ``quantized`` bit for bit, and two elementwise passes cheaper.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, codes: Tensor) -> Tensor:  # noqa: ARG004
        """Pass the code vectors through unchanged.

        Args:
            ctx: autograd context (unused).
            inputs: (*S, D) encoder output, which receives the gradient.
            codes: (*S, D) code vectors.
        Returns:
            ``codes`` (a view).
        """
        return codes.view_as(codes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ARG004
        """Route the gradient to the encoder output.

        Args:
            ctx: autograd context (unused).
            grad: (*S, D) gradient of the output.
        Returns:
            ``(grad, None)``: ``grad`` for ``inputs``, none for ``codes``.
        """
        return grad, None


class RotationTrick(torch.autograd.Function):
    """The rotation trick (Fifty et al. 2024, arXiv 2410.06424) in place of straight-through.

    Forward: the code vectors ``e``, exactly. Backward: each input row ``x`` receives
    ``lambda R^T g`` where ``R`` rotates ``x / ||x||`` onto ``e / ||e||`` and ``lambda = ||e|| / ||x||``
    (both held constant): with ``u = x / ||x||``, ``q = e / ||e||``, ``w = (u + q) / ||u + q||``,
    ``R = I - 2 w w^T + 2 q u^T`` and ``lambda R^T g = lambda (g - 2 w (w.g) + 2 u (q.g))``. So
    ``lambda R x = e`` and the gradient keeps the angle between ``g`` and ``x`` that ``g`` makes with ``e``.
    Norms below 1e-6 are taken as 1e-6 (an opposite pair, ``u + q = 0``, gives ``w = 0``).
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, codes: Tensor) -> Tensor:
        """Pass the code vectors through unchanged; keep both for the backward pass.

        Args:
            ctx: autograd context.
            inputs: (*S, D) vectors quantised, which receive the gradient.
            codes: (*S, D) their code vectors.
        Returns:
            ``codes`` (a view).
        """
        ctx.save_for_backward(inputs.detach(), codes.detach())
        return codes.view_as(codes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        """Rotate and scale the gradient of each row.

        With ``s = u.q``, ``2 w (w.g) = (u + q)(u.g + q.g) / (1 + s)``, so ``lambda R^T g`` is
        ``lambda g + x lambda (2 q.g - a) / ||x|| - e lambda a / ||e||`` with ``a = (u.g + q.g) / (1 + s)``:
        five dot products per row and three passes over the rows, no (N, D) temporary but the result.

        Args:
            ctx: autograd context.
            grad: (*S, D) gradient of the output.
        Returns:
            ``(lambda R^T grad, None)``.
        """
        x, e = ctx.saved_tensors
        def dot(a: Tensor, b: Tensor) -> Tensor:
            return torch.linalg.vecdot(a, b)[..., None]

        x_norm, e_norm = dot(x, x).sqrt_().clamp_min_(_TINY), dot(e, e).sqrt_().clamp_min_(_TINY)
        cos = dot(x, e) / (x_norm * e_norm)  # s = u.q
        ug, qg = dot(x, grad) / x_norm, dot(e, grad) / e_norm
        a = (ug + qg) / (1 + cos).clamp_min_(_TINY**2 / 2)  # ||u + q|| >= 1e-6, as the docstring's guard
        scale = e_norm / x_norm  # lambda
        out = grad * scale
        out.addcmul_(x, scale * (2 * qg - a) / x_norm).addcmul_(e, scale * a / e_norm, value=-1.0)
        return out, None


class SquaredError(torch.autograd.Function):
    """``mean((a - b)^2)`` over every element, summed in row blocks (no (N, D) temporary in the forward pass);
    gradients ``2 (a - b) / n`` and its negative, for whichever input needs one."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        """The mean squared difference.

        Args:
            ctx: autograd context.
            a: (*S, D) tensor.
            b: tensor of ``a``'s shape.
        Returns:
            a scalar; 0 for empty inputs.
        """
        ctx.save_for_backward(a, b)
        flat_a, flat_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        total = a.new_zeros(())
        if a.numel() == 0:
            return total
        buf = torch.empty(min(_ERROR_ROWS, flat_a.shape[0]), flat_a.shape[1], dtype=a.dtype, device=a.device)
        for start in range(0, flat_a.shape[0], _ERROR_ROWS):
            rows = min(_ERROR_ROWS, flat_a.shape[0] - start)
            d = torch.sub(flat_a[start : start + rows], flat_b[start : start + rows], out=buf[:rows]).view(-1)
            total += torch.dot(d, d)
        return total / a.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        """Gradients of the mean squared difference.

        Args:
            ctx: autograd context.
            grad: scalar gradient of the output.
        Returns:
            ``(2 (a - b) grad / n, -2 (a - b) grad / n)``, None where an input needs none.
        """
        a, b = ctx.saved_tensors
        if a.numel() == 0:
            return torch.zeros_like(a), torch.zeros_like(b)
        diff = torch.sub(a, b).mul_(grad * (2.0 / a.numel()))
        ga = diff if ctx.needs_input_grad[0] else None
        gb = (diff.neg() if ga is not None else diff.neg_()) if ctx.needs_input_grad[1] else None
        return ga, gb
