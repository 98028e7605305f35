"""The headless renderer against analytic answers: a sphere's disc and shading, ray-box distances, depth order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

import render

SIZE = 96


class Ball(torch.nn.Module):
    """The exact SDF of a ball of ``radius`` at the origin."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.norm(dim=1) - self.radius


def disc_radius(camera: render.Camera, radius: float, height: int) -> float:
    """Pixel radius of the silhouette of a ball at the camera's target: its angular radius is asin(r / d)."""
    distance = float(np.linalg.norm(camera.eye))
    return camera.focal(height) * math.tan(math.asin(radius / distance))


def test_field_render_of_a_ball_is_a_disc_of_the_right_radius_and_shading():
    camera = render.Camera.default()
    image, mask = render.render_field(Ball(0.5), camera, SIZE, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
    assert math.sqrt(mask.sum() / math.pi) == pytest.approx(disc_radius(camera, 0.5, SIZE), abs=0.5)
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose([rows.mean(), cols.mean()], SIZE / 2 - 0.5, atol=0.2)  # centred
    # the centre of the disc faces the camera: its normal is -forward
    _, _, forward = camera.frame()
    expected = (render.AMBIENT + render.DIFFUSE * max(0.0, float(camera.light() @ -forward))) \
        * np.asarray(render.COLORS["model"])
    centre = image[SIZE // 2 - 1:SIZE // 2 + 1, SIZE // 2 - 1:SIZE // 2 + 1].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(centre, expected, atol=0.01)
    assert np.all(image[~mask] == 1.0)  # white background
    # the lit side is brighter than the other: the light comes over the camera's left shoulder
    top_left, bottom_right = image[rows.min() + 3, SIZE // 2 - 8], image[rows.max() - 3, SIZE // 2 + 8]
    assert top_left.sum() > bottom_right.sum()


def test_mesh_render_and_field_render_of_the_same_ball_agree():
    camera = render.Camera.default()
    field_image, field_mask = render.render_field(Ball(0.5), camera, SIZE, SIZE, color=render.COLORS["truth"])
    ball = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    mesh_image, mesh_mask = render.render_mesh(ball.vertices, ball.faces, camera, SIZE, SIZE)
    both = field_mask & mesh_mask
    assert both.sum() / (field_mask | mesh_mask).sum() > 0.97
    assert np.abs(field_image - mesh_image)[both].mean() < 0.01


def test_ray_box_distances():
    origins = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    directions = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t_near, t_far = render.ray_box(origins, directions)
    np.testing.assert_allclose(t_near[[0, 2]], [2.0, 0.0])
    np.testing.assert_allclose(t_far[[0, 2]], [4.0, 1.0])
    assert t_near[1] > t_far[1]  # parallel to the box, outside it: a miss


def test_rasterize_keeps_the_nearer_of_two_overlapping_squares():
    camera = render.Camera(eye=(0.0, 0.0, 3.0), fov=40.0)
    square = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    far = np.c_[square, np.zeros(4)]
    near = np.c_[square + 0.25, np.full(4, 0.5)]
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    face, depth = render.rasterize(np.r_[far, near], faces, camera, SIZE, SIZE)
    face, depth = face.reshape(SIZE, SIZE), depth.reshape(SIZE, SIZE)
    f = camera.focal(SIZE)
    # the far square spans 1.0 at depth 3: f / 3 pixels; every covered pixel has its depth
    covered = (face == 0) | (face == 1)
    assert covered.any(1).sum() == pytest.approx(f / 3, abs=1.5)
    np.testing.assert_allclose(depth[covered], 3.0, atol=1e-9)
    np.testing.assert_allclose(depth[face >= 2], 2.5, atol=1e-9)
    # where both cover the pixel the nearer square wins
    x, y = SIZE // 2 + int(0.1 * f / 2.5), SIZE // 2 - int(0.1 * f / 2.5)
    assert face[y, x] >= 2
    assert (face == -1).sum() > 0


def test_a_sheet_is_lit_from_both_sides():
    square = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
    front = render.render_mesh(square, [[0, 1, 2], [0, 2, 3]], render.Camera(eye=(0.0, 0.0, 3.0)), SIZE, SIZE)[0]
    back = render.render_mesh(square, [[0, 1, 2], [0, 2, 3]], render.Camera(eye=(0.0, 0.0, -3.0)), SIZE, SIZE)[0]
    np.testing.assert_allclose(front[SIZE // 2, SIZE // 2], back[SIZE // 2, SIZE // 2], atol=1e-9)
    assert front[SIZE // 2, SIZE // 2].sum() > 3 * render.AMBIENT * 0.8


def test_key_spheres_as_one_mesh():
    spheres = np.array([[0.0, 0.0, 0.0, -0.3], [0.5, 0.0, 0.0, -0.1]])
    vertices, faces = render.sphere_meshes(spheres, subdivisions=1)
    assert len(faces) == 2 * 80 and faces.max() == len(vertices) - 1
    radii = np.linalg.norm(vertices[: len(vertices) // 2], axis=1)
    np.testing.assert_allclose(radii, 0.3)


def test_turntable_is_an_animated_gif_of_the_model_turning(tmp_path):
    from PIL import Image

    class OffCentre(torch.nn.Module):  # a ball off the axis of rotation: the frames differ
        def forward(self, x):
            return (x - torch.tensor([0.4, 0.0, 0.0])).norm(dim=1) - 0.3

    render.save_turntable(tmp_path / "t.gif", OffCentre(), frames=4, size=32)
    with Image.open(tmp_path / "t.gif") as gif:
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB")))
    assert len(frames) == 4 and frames[0].shape == (32, 32, 3)
    assert not np.array_equal(frames[0], frames[2])
