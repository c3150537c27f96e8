"""Flat LambdaCDM distances for the lens population (H0 and Omega_m from params; radiation
neglected), tabulated once per cosmology on a uniform redshift grid, and the SIS Einstein radius."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dhs.simulate.interp import uinterp

C_KMS = 299792.458
ARCSEC_PER_RAD = 206264.80624709636


class Cosmology:
    """Flat LCDM distances tabulated on a uniform redshift grid (and the inverse chi -> z)."""

    def __init__(self, H0: float = 70.0, Om: float = 0.3, zmax: float = 8.0, dz: float = 5e-4):
        self.H0, self.Om = float(H0), float(Om)
        self.dh = C_KMS / self.H0  # Mpc
        z = np.arange(0.0, zmax + 0.5 * dz, dz)
        inv_e = 1.0 / self.E(z)
        dc = np.concatenate([[0.0], np.cumsum(0.5 * (inv_e[1:] + inv_e[:-1]) * dz)]) * self.dh
        self._dz, self._dc = dz, dc
        self._dchi = dc[-1] / (z.size - 1)
        self._z_of_chi = np.interp(np.arange(z.size) * self._dchi, dc, z)

    def E(self, z):
        return np.sqrt(self.Om * (1 + np.asarray(z, float)) ** 3 + 1.0 - self.Om)

    def comoving(self, z):
        """Line-of-sight comoving distance (Mpc)."""
        return uinterp(z, 0.0, self._dz, self._dc)

    def z_of_comoving(self, chi):
        return uinterp(chi, 0.0, self._dchi, self._z_of_chi)

    def angular_diameter(self, z):
        return self.comoving(z) / (1.0 + np.asarray(z, float))

    def dls_over_ds(self, z_l, z_s):
        """D_ls / D_s (flat): 1 - chi_l/chi_s, 0 where z_s <= z_l."""
        return np.clip(1.0 - self.comoving(z_l) / np.maximum(self.comoving(z_s), 1e-9), 0.0, None)

    def distance_modulus(self, z):
        dl = self.comoving(z) * (1.0 + np.asarray(z, float))
        return 5.0 * np.log10(np.maximum(dl, 1e-9) * 1e5)  # D_L in units of 10 pc

    def dvdz(self, z):
        """Comoving volume per unit z per steradian (Mpc^3 / sr)."""
        return self.dh * self.comoving(z) ** 2 / self.E(z)

    def age_gyr(self, z):
        """Cosmic time at z (flat LCDM, radiation neglected), Gyr."""
        ol = 1.0 - self.Om
        h_gyr = self.H0 / 977.792  # H0 in 1/Gyr
        x = np.sqrt(ol / self.Om) * (1.0 + np.asarray(z, float)) ** -1.5
        return 2.0 / (3.0 * h_gyr * np.sqrt(ol)) * np.arcsinh(x)


_COSMO_CACHE: dict[tuple[float, float], Cosmology] = {}


def cosmology(params: Mapping[str, Any]) -> Cosmology:
    key = (float(params["H0"]), float(params["Om"]))
    if key not in _COSMO_CACHE:
        _COSMO_CACHE[key] = Cosmology(*key)
    return _COSMO_CACHE[key]


def lensing_theta_e(sigma_kms, z_l, z_s, cosmo: Cosmology) -> np.ndarray:
    """SIS Einstein radius 4 pi (sigma/c)^2 D_ls/D_s in arcsec (0 where z_s <= z_l)."""
    return 4.0 * math.pi * (np.asarray(sigma_kms) / C_KMS) ** 2 * cosmo.dls_over_ds(z_l, z_s) * ARCSEC_PER_RAD

