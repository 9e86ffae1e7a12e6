"""A local-contrast channel for the symmetry test: where an image is textured, as an exactly D4-equivariant map.

Across images, a Gaussian (or linear) kernel on intensity windows sees where *brightness* is, but hardly where
*texture* is: two independent textures at the same place are as far apart as two at different places. Natural
photographs are up-down asymmetric also in that second way (textured ground below, smooth sky above: 79% of the
Rain100L training photos are more textured in their bottom half (mean |Laplacian|), while only 52% are brighter in
their top half; test photos: 71% and 72%). The channel added here makes that visible to the window statistics:

    c(x) = log(CONTRAST_FLOOR + max(0, Y_h |L x|))

``L`` the 5-point Laplacian at native resolution (replicated edges), ``|.|`` pointwise, ``Y_h`` the project's
resampling to mesh ``h`` (:func:`symmetry.transforms.to_mesh`, which averages the magnitude over a sample's
footprint when ``h > 1``), ``max(0, .)`` because the cubic can undershoot, and the log so that an image's overall
texture level is an additive constant (removed with the window mean).

Why the test stays exact: the 5-point stencil and replicated edges are invariant under quarter turns and flips,
and resampling commutes with them, so ``c(pi_A x) = pi_A c(x)`` for every grid-exact ``A``
(``tests/test_contrast.py`` checks it to 1e-12). If the law of ``x`` is G-invariant, so is the law of
``(x, c(x))``: rejecting the symmetry of the extended windows rejects the symmetry of the images, and the
randomisation null (which re-transforms whole images) is exact as before. The reported eps is then a distance
between laws of (intensity, contrast) windows, a decision statistic rather than the theorem's eps in image units.
"""

from __future__ import annotations

import torch

from symmetry.transforms import to_mesh

CONTRAST_FLOOR = 1.0 / 255  # one 8-bit quantisation step: flatter regions all read as "flat"


def laplacian_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``|L x|`` ``(1, H, W)`` of the channel mean of ``image`` ``(C, H, W)``: 5-point Laplacian, replicated edges."""
    x = image.mean(dim=0, keepdim=True)
    p = torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * x
    return lap.abs()


def contrast_at_mesh(magnitude: torch.Tensor, mesh: float) -> torch.Tensor:
    """The contrast channel ``log(floor + max(0, Y_h |L x|))`` at mesh ``h`` from :func:`laplacian_magnitude`."""
    return torch.log(CONTRAST_FLOOR + to_mesh(magnitude, mesh).clamp_min(0))


class ContrastSource:
    """An image source seen with one extra channel, the local contrast: ``at_mesh(h)`` is ``(C + 1, H_h, W_h)``.

    Wraps any source with ``load()`` (files, arrays) or only ``at_mesh(h)`` (sampled at mesh 1 for the Laplacian;
    the intensity channel then stays its own raster at each mesh). Rasters are computed once per mesh and kept
    while the wrapper lives (one image at a time).
    """

    def __init__(self, source):
        self.source = source
        self.name = source.name
        self._native: torch.Tensor | None = None
        self._magnitude: torch.Tensor | None = None
        self._rasters: dict[float, torch.Tensor] = {}

    def _load(self) -> torch.Tensor:
        if self._native is None:
            load = getattr(self.source, "load", None)
            self._native = load() if callable(load) else self.source.at_mesh(1.0)
            self._magnitude = laplacian_magnitude(self._native)
        return self._native

    def at_mesh(self, mesh: float) -> torch.Tensor:
        mesh = float(mesh)
        if mesh not in self._rasters:
            native = self._load()
            if callable(getattr(self.source, "load", None)):
                image = native if mesh == 1 else to_mesh(native, mesh)
            else:  # an analytic field: its own raster at this mesh, as without the contrast channel
                image = self.source.at_mesh(mesh)
            self._rasters[mesh] = torch.cat([image, contrast_at_mesh(self._magnitude, mesh).to(image.dtype)])
        return self._rasters[mesh]
