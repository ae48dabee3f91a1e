"""Render-free point clouds: points pre-sampled on the scene's visible surfaces.

``SceneSurfaceSampler`` samples, once per model, points on the surface of every geom (and site)
that the default MuJoCo renderer would draw (group 0-2, alpha > 0), expressed in the geom's own
frame. Each step it moves them with the current geom/site poses (``data.geom_xpos/xmat``) in one
vectorized gather + matmul. Occluded surfaces are included (unlike a camera cloud).
"""

from __future__ import annotations

import mujoco
import numpy as np

from maniflow_rl.envs.metaworld.point_cloud import crop_to_workspace

__all__ = ["SceneSurfaceSampler", "sample_shape_surface"]

_VISIBLE_GROUPS = (0, 1, 2)  # mjvOption default: geom/site groups 0, 1, 2 are drawn
_DEFAULT_GEOM_RGBA = np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32)
_T = mujoco.mjtGeom


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)


def shape_area(gtype: int, size: np.ndarray, mesh_area: float = 0.0) -> float:
    """Surface area of a MuJoCo primitive (half-sizes as in ``model.geom_size``)."""
    a, b, c = size
    if gtype == _T.mjGEOM_SPHERE:
        return 4 * np.pi * a * a
    if gtype == _T.mjGEOM_ELLIPSOID:  # Knud Thomsen's approximation
        p = 1.6075
        return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    if gtype == _T.mjGEOM_CYLINDER:
        return 2 * np.pi * a * 2 * b + 2 * np.pi * a * a
    if gtype == _T.mjGEOM_CAPSULE:
        return 2 * np.pi * a * 2 * b + 4 * np.pi * a * a
    if gtype == _T.mjGEOM_BOX:
        return 8 * (a * b + a * c + b * c)
    if gtype == _T.mjGEOM_PLANE:
        return 4 * a * b
    if gtype == _T.mjGEOM_MESH:
        return mesh_area
    return 0.0


def _mesh_triangles(model: mujoco.MjModel, mesh_id: int) -> np.ndarray:
    vadr, fadr = model.mesh_vertadr[mesh_id], model.mesh_faceadr[mesh_id]
    verts = model.mesh_vert[vadr: vadr + model.mesh_vertnum[mesh_id]]
    faces = model.mesh_face[fadr: fadr + model.mesh_facenum[mesh_id]]
    return verts[faces]  # [F, 3 corners, 3]


def _triangle_areas(tri: np.ndarray) -> np.ndarray:
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_shape_surface(gtype: int, size: np.ndarray, n: int, rng: np.random.Generator,
                         triangles: np.ndarray | None = None) -> np.ndarray:
    """``n`` points (roughly area-uniform) on a shape's surface, in the shape's local frame."""
    a, b, c = np.asarray(size, dtype=np.float64)
    if gtype == _T.mjGEOM_SPHERE:
        return _unit_vectors(rng, n) * a
    if gtype == _T.mjGEOM_ELLIPSOID:
        return _unit_vectors(rng, n) * np.array([a, b, c])
    if gtype in (_T.mjGEOM_CYLINDER, _T.mjGEOM_CAPSULE):
        r, h = a, b
        side = 2 * np.pi * r * 2 * h
        ends = 2 * np.pi * r * r if gtype == _T.mjGEOM_CYLINDER else 4 * np.pi * r * r
        on_side = rng.random(n) < side / (side + ends)
        theta = rng.uniform(0, 2 * np.pi, n)
        pts = np.stack([r * np.cos(theta), r * np.sin(theta), rng.uniform(-h, h, n)], axis=1)
        k = int((~on_side).sum())
        if gtype == _T.mjGEOM_CYLINDER:  # disc caps
            rad = r * np.sqrt(rng.random(k))
            th = rng.uniform(0, 2 * np.pi, k)
            z = np.where(rng.random(k) < 0.5, -h, h)
            pts[~on_side] = np.stack([rad * np.cos(th), rad * np.sin(th), z], axis=1)
        else:  # hemispherical caps
            u = _unit_vectors(rng, k) * r
            u[:, 2] += np.where(u[:, 2] >= 0, h, -h)
            pts[~on_side] = u
        return pts
    if gtype == _T.mjGEOM_BOX:
        half = np.array([a, b, c])
        face_areas = np.array([b * c, a * c, a * b])  # faces normal to x, y, z (each twice)
        axis = rng.choice(3, size=n, p=face_areas / face_areas.sum())
        pts = rng.uniform(-1, 1, size=(n, 3)) * half
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        pts[np.arange(n), axis] = sign * half[axis]
        return pts
    if gtype == _T.mjGEOM_PLANE:
        return np.stack([rng.uniform(-a, a, n), rng.uniform(-b, b, n), np.zeros(n)], axis=1)
    if gtype == _T.mjGEOM_MESH:
        if triangles is None:
            raise ValueError("mesh sampling needs triangles")
        areas = _triangle_areas(triangles)
        tri = triangles[rng.choice(len(triangles), size=n, p=areas / areas.sum())]
        u, v = rng.random(n), rng.random(n)
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        edge1, edge2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        return tri[:, 0] + u[:, None] * edge1 + v[:, None] * edge2
    raise ValueError(f"unsupported geom type {gtype}")


def _effective_alpha(model: mujoco.MjModel, geom_id: int) -> float:
    rgba = model.geom_rgba[geom_id]
    mat = model.geom_matid[geom_id]
    if mat >= 0 and np.allclose(rgba, _DEFAULT_GEOM_RGBA):
        return float(model.mat_rgba[mat, 3])
    return float(rgba[3])


class SceneSurfaceSampler:
    """Points on the visible surfaces of a MuJoCo scene, moved with the bodies each step.

    Args:
        model, data: the MuJoCo model and data.
        num_points: surface points in total, distributed by area (at least
            ``min_points_per_shape`` per shape).
        bounds: optional crop box ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``; shapes on static
            bodies (welded to the world: floor, table, pedestal) then only count with the part
            of their area inside it (+5 cm), so the budget goes where the crop keeps points.
        include_sites: also sample visible sites (e.g. MetaWorld's goal marker), as the camera
            sees them.
        seed: seed of the (one-off) surface sampling.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        num_points: int = 16384,
        bounds: np.ndarray | None = None,
        include_sites: bool = True,
        min_points_per_shape: int = 16,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        shapes = []  # (is_site, id, type, size, triangles); geoms first, then sites (_poses order)
        for g in range(model.ngeom):
            if model.geom_group[g] in _VISIBLE_GROUPS and _effective_alpha(model, g) > 0:
                mesh = model.geom_type[g] == _T.mjGEOM_MESH
                tri = _mesh_triangles(model, model.geom_dataid[g]) if mesh else None
                shapes.append((False, g, int(model.geom_type[g]), model.geom_size[g].copy(), tri))
        for s in range(model.nsite if include_sites else 0):
            if model.site_group[s] in _VISIBLE_GROUPS and model.site_rgba[s, 3] > 0:
                shapes.append((True, s, int(model.site_type[s]), model.site_size[s].copy(), None))
        self._geom_ids = np.array([i for site, i, *_ in shapes if not site], dtype=int)
        self._site_ids = np.array([i for site, i, *_ in shapes if site], dtype=int)
        areas = np.array([
            shape_area(t, sz, _triangle_areas(tri).sum() if tri is not None else 0.0)
            for _, _, t, sz, tri in shapes
        ])
        body = np.concatenate([model.geom_bodyid[self._geom_ids],
                               model.site_bodyid[self._site_ids]])
        static = (model.body_weldid[body] == 0) & (model.body_mocapid[model.body_rootid[body]] < 0)
        if bounds is not None:
            inside = self._fraction_inside(model, data, shapes, bounds, rng)
            areas = np.where(static, areas * inside, areas)
        share = np.round(num_points * areas / areas.sum())
        counts = np.where(areas > 0, np.maximum(min_points_per_shape, share), 0).astype(int)
        self._local = np.concatenate([
            sample_shape_surface(t, sz, n, rng, tri)
            for (_, _, t, sz, tri), n in zip(shapes, counts) if n > 0
        ]).astype(np.float64)
        self._owner = np.repeat(np.arange(len(shapes)), counts)
        self._is_static = static[self._owner]
        self._static_cache: np.ndarray | None = None
        kinds = {True: mujoco.mjtObj.mjOBJ_SITE, False: mujoco.mjtObj.mjOBJ_GEOM}
        self.shape_names = [
            f"{'site' if site else 'geom'} {i} {mujoco.mj_id2name(model, kinds[site], i) or ''}"
            for site, i, *_ in shapes
        ]

    def _fraction_inside(self, model, data, shapes, bounds, rng, probe: int = 256) -> np.ndarray:
        """Fraction of each shape's surface inside ``bounds`` (+5 cm) in the current pose."""
        self._local = np.concatenate([sample_shape_surface(t, sz, probe, rng, tri)
                                      for _, _, t, sz, tri in shapes])
        self._owner = np.repeat(np.arange(len(shapes)), probe)
        mujoco.mj_kinematics(model, data)
        pts = self.points(data)
        lo, hi = np.asarray(bounds)[0] - 0.05, np.asarray(bounds)[1] + 0.05
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        return inside.reshape(len(shapes), probe).mean(axis=1)

    def _poses(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        pos = np.concatenate([data.geom_xpos[self._geom_ids], data.site_xpos[self._site_ids]])
        mat = np.concatenate([data.geom_xmat[self._geom_ids], data.site_xmat[self._site_ids]])
        return pos, mat.reshape(-1, 3, 3)

    @property
    def num_points(self) -> int:
        return len(self._local)

    def points(self, data: mujoco.MjData, which: np.ndarray | slice = slice(None)) -> np.ndarray:
        """World-frame points ``[M, 3]`` (float64) for the current ``data`` (after
        mj_forward / mj_kinematics); ``which`` selects a subset of the sampled points."""
        pos, mat = self._poses(data)
        owner = self._owner[which]
        return np.einsum("nij,nj->ni", mat[owner], self._local[which]) + pos[owner]

    def cache_static(self, data: mujoco.MjData, bounds: np.ndarray) -> None:
        """Transform and crop the points of static shapes once. Call it after every reset:
        MetaWorld moves some static bodies (e.g. button boxes) when it resets a layout."""
        self._static_cache = crop_to_workspace(self.points(data, self._is_static), bounds)

    def cropped_points(self, data: mujoco.MjData, bounds: np.ndarray) -> np.ndarray:
        """Points inside ``bounds``: moving shapes transformed now + the cached static ones."""
        if self._static_cache is None:
            self.cache_static(data, bounds)
        moving = crop_to_workspace(self.points(data, ~self._is_static), bounds)
        return np.concatenate([self._static_cache, moving])
