"""Wrong answers to the exercises of notebooks/50_gaussian_splatting_tiny.py: one per exercise, each a
mistake a learner could make (tests/test_exercise.py runs every exercise with it and expects ✗)."""

import torch


def _covariance_unsquared(scales, rotations):
    return rotations @ torch.diag_embed(scales) @ rotations.transpose(-1, -2)  # R S Rᵀ


def _jacobian_sign_error(points_cam, camera):
    x, y, z = points_cam.unbind(-1)
    zero = torch.zeros_like(z)
    row_u = torch.stack([camera.fx / z, zero, camera.fx * x / z**2], -1)  # + instead of -
    row_v = torch.stack([zero, camera.fy / z, camera.fy * y / z**2], -1)
    return torch.stack([row_u, row_v], -2)


def _ewa_without_the_view_rotation(cov3d, points_cam, camera):
    from labkit.splatting.cameras import projection_jacobian

    J = projection_jacobian(points_cam, camera)
    return J @ cov3d @ J.transpose(-1, -2) + 0.3 * torch.eye(2)  # W left out


def _composite_back_to_front(colors, alphas):
    colors, alphas = colors.flip(0), alphas.flip(0)
    transmittance = torch.cat([alphas.new_ones(1), torch.cumprod(1 - alphas, 0)[:-1]])
    return (colors * (alphas * transmittance)[:, None]).sum(0)


WRONG = {
    "my_covariance": _covariance_unsquared,
    "my_jacobian": _jacobian_sign_error,
    "my_project_covariance": _ewa_without_the_view_rotation,
    "my_composite": _composite_back_to_front,
}
