"""PSNR and SSIM as the paper reports them: RGB, uint8 levels."""

import numpy as np
import torch
import torch.nn.functional as F


def quantize(image: torch.Tensor) -> torch.Tensor:
    """[0,1] float -> the uint8 levels a user would save, as float."""
    return torch.round(image.clamp(0, 1) * 255.0)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB over RGB uint8 levels; inputs [B,3,H,W] in [0,1]."""
    mse = (quantize(prediction) - quantize(target)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))


def psnr_of_images(prediction, target) -> float:
    """psnr() of two uint8 RGB images (PIL images or HxWx3 arrays), as a float."""
    def as_batch(image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None] / 255.0
    return float(psnr(as_batch(prediction), as_batch(target)))


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, valid region),
    averaged over the RGB channels, on uint8 levels."""
    x, y = quantize(prediction).double(), quantize(target).double()
    c = x.shape[1]
    taps = _gaussian_taps()
    rows = taps.view(1, 1, 1, -1).expand(c, 1, 1, taps.numel())
    columns = taps.view(1, 1, -1, 1).expand(c, 1, taps.numel(), 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(t):
        # The 11x11 Gaussian is separable: two 11-tap passes give the same sums (to float64
        # rounding) at a tenth of the work of one 11x11 pass, which CPU torch runs slowly in
        # float64.
        return F.conv2d(F.conv2d(t, rows, groups=c), columns, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()
