"""What a stamp holds besides the arc: the host where a catalogue cutout puts it, its morphology,
and the field around it (neighbour galaxies, stars, a close companion).

Every draw comes from the stamp's keyed uniforms (``dhs.simulate.keyed``, stream per use, keyed
by the host id), so the scene does not depend on the batch, a paired control and injection show
the same scene, and the label never enters: hosts, fields and hard negatives are distributed
identically for controls and injections (only the arc differs).

**Centring.** A cutout is centred on the host's catalogue position, not on its light: the host
(and, for an injection, the lens, which is the host's mass) sits at a uniform sub-pixel offset
within +-0.5 px of the stamp centre plus a catalogue-centroid error, Gaussian per axis with
``centroid_error_arcsec`` (Legacy Surveys Tractor positions of galaxies at these magnitudes
scatter by ~0.05-0.2 arcsec).

**Host kinds** (``host_kinds``: probabilities): ``lrg`` (the smooth early-type host), and the
morphologies lens finders confuse with lensed arcs, as *hosts* so that they occur among controls
and injections alike:

- ``lrg_tangential_companion``: a small blue elongated galaxy 0.5-3.5 arcsec from the LRG with its
  major axis tangential (an arc look-alike), r 20.5-24.5 from the field's number counts;
- ``lrg_alignment``: two or three small blue galaxies 1-4 arcsec around the LRG (chance alignment;
  the field's neighbours already make alignments at sky rates, so it belongs to training only);
- ``spiral``: red bulge + exponential disc + blue logarithmic arms;
- ``ring``: a bulge with a blue, lumpy ring of radius 1.2-3.5 arcsec (a collisional or resonance ring);
- ``merger``: the host and a partner 1-3.5 arcsec away with one or two tidal tails;
- ``edge_on``: a thin disc (axis ratio 0.1-0.25) with a small bulge.

The host's total r flux is that of the population's host in every kind; colours are split
between red bulges and blue star-forming parts. ``control_kind`` of a control is its host kind.

**Field** (Poisson numbers over the host grid, i.e. the stamp plus its ``host_pad_px`` margin, so
light from just outside the stamp scatters in):

- neighbour galaxies from r-band number counts, dN/dm = A 10^(s (m - 24)) per deg^2 per mag
  (A ~ 3e4, s ~ 0.33 between r 17 and 25.5; e.g. Metcalfe et al. 2001), a blue (star-forming,
  disc-like) or red (early-type) population, sizes shrinking with magnitude;
- stars, Moffat with the stamp's own PSF (point sources, added in Fourier space so that their
  sub-pixel positions and fluxes are exact), from r 16 (near a DECam exposure's saturation) to 23;
- with probability ``companion_probability``, a close early-type companion of the host,
  2-6 arcsec away and 0.5-3 mag fainter (galaxies cluster).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from dhs.params.schema import CORE_KINDS, HOST_KINDS
from dhs.simulate import keyed

# the look-alike companions' r magnitudes follow the field's blue number counts (slope 0.33 / mag),
# not the host's brightness: a bright host does not bring a bright companion
COMPANION_R_MAG = (20.5, 24.5)
COMPANION_SEP_ARCSEC = (0.5, 3.5)
COMPANION_COUNT_SLOPE_PER_MAG = 0.33
DEG2_PER_ARCSEC2 = 1.0 / 3600.0**2
MAX_NEIGHBOURS = 24
MAX_STARS = 6

# uniforms per stamp, by use (fixed layouts: a change in one use never shifts another's draws)
_N_CENTRE = 4
_N_CORE = 8
# the host kinds whose core is an early type's (the others carry their own structure); the
# structures such a core may have (simulate.core_structures) are CORE_KINDS, each a kind of host
# drawn independently of the label
EARLY_TYPE_KINDS = ("lrg", "lrg_tangential_companion", "lrg_alignment")
_N_KIND = 1
_N_MORPH = 40
_N_COMPANION = 8
_N_PER_NEIGHBOUR = 10
_N_PER_STAR = 5
_N_FIELD = 3 + MAX_NEIGHBOURS * _N_PER_NEIGHBOUR + MAX_STARS * _N_PER_STAR + _N_COMPANION
# where each use starts in a stamp's field uniforms
_FIELD_NEIGHBOURS = 3
_FIELD_STARS = _FIELD_NEIGHBOURS + MAX_NEIGHBOURS * _N_PER_NEIGHBOUR
_FIELD_COMPANION = _FIELD_STARS + MAX_STARS * _N_PER_STAR


@dataclass(frozen=True)
class NeighbourCounts:
    """``simulate.fields.neighbours`` as the schema checked it."""

    density_r24_per_deg2_per_mag: float
    slope_per_mag: float
    r_mag_min: float
    r_mag_max: float
    blue_fraction: float


@dataclass(frozen=True)
class StarCounts:
    """``simulate.fields.stars`` as the schema checked it (``density_per_deg2`` between
    ``r_mag_min`` and ``r_mag_max``)."""

    density_per_deg2: float
    slope_per_mag: float
    r_mag_min: float
    r_mag_max: float


@dataclass(frozen=True)
class SceneConfig:
    """``simulate.centring``, ``host_kinds``, ``host_kinds_train``, ``core_structures`` and
    ``fields`` as the schema checked them (dhs.params.schema holds each default), with the
    survey's pixel scale (``simulate.pixel_scale_arcsec``) that the sub-pixel phase spans."""

    subpixel: bool
    centroid_error_arcsec: float
    host_kinds: Mapping[str, float]
    host_kinds_train: Mapping[str, float] | None   # the train split's frequencies (None: host_kinds)
    core_structures: Mapping[str, float]           # fraction of early-type hosts with each; the rest smooth
    neighbours: NeighbourCounts | None
    stars: StarCounts | None
    companion_probability: float
    pixel_scale_arcsec: float

    @classmethod
    def from_params(cls, centring: Mapping, host_kinds: Mapping, fields: Mapping, host_kinds_train: Mapping | None,
                    core_structures: Mapping, pixel_scale_arcsec: float) -> "SceneConfig":
        """From the checked values of the ``simulate`` keys it names."""
        return cls(subpixel=centring["subpixel"], centroid_error_arcsec=float(centring["centroid_error_arcsec"]),
                   host_kinds=dict(host_kinds), host_kinds_train=dict(host_kinds_train) if host_kinds_train else None,
                   core_structures=dict(core_structures),
                   neighbours=NeighbourCounts(**fields["neighbours"]) if fields["neighbours"] else None,
                   stars=StarCounts(**fields["stars"]) if fields["stars"] else None,
                   companion_probability=float(fields["companion_probability"]), pixel_scale_arcsec=float(pixel_scale_arcsec))

    def kind_cdf(self, train: bool = False) -> tuple[list[str], np.ndarray]:
        kinds = self.host_kinds_train if train and self.host_kinds_train else self.host_kinds
        names = [k for k in HOST_KINDS if kinds.get(k, 0.0) > 0]
        p = np.array([kinds[k] for k in names], float)
        return names, np.cumsum(p / p.sum())

    def kinds_of(self, u: np.ndarray, train: np.ndarray) -> np.ndarray:
        """Host kind of each stamp from its uniform ``u``: the train split's rows (``train``) from
        ``host_kinds_train``, the others from ``host_kinds``."""
        out = np.empty(len(u), dtype=object)
        for is_train in (False, True):
            sel = train == is_train
            names, cdf = self.kind_cdf(is_train)
            out[sel] = np.array(names, dtype=object)[np.minimum(np.searchsorted(cdf, u[sel], side="right"), len(names) - 1)]
        return out


@dataclass
class Components:
    """Unit-flux profiles of one kind placed in a batch: stamp index (K,), parameters (K,) each,
    band fluxes (K, 3) in nMgy."""

    stamp: np.ndarray
    params: dict[str, np.ndarray]
    flux: np.ndarray


@dataclass
class Scene:
    host_x_arcsec: np.ndarray
    host_y_arcsec: np.ndarray
    components: dict[str, list[Components]]  # profile name -> pieces to render
    stars: Components                        # params x_arcsec, y_arcsec
    columns: dict[str, np.ndarray]           # per-stamp summary written to the table


@dataclass(frozen=True)
class HostLight:
    """The population's host of each stamp, (B,) each: total r magnitude, colours, Sersic
    profile, total r flux (nMgy) and centre (arcsec from the stamp centre)."""

    r_mag: np.ndarray
    g_minus_r: np.ndarray
    r_minus_z: np.ndarray
    reff_arcsec: np.ndarray
    n: np.ndarray
    q: np.ndarray
    phi_rad: np.ndarray
    flux_r_nmgy: np.ndarray
    x_arcsec: np.ndarray
    y_arcsec: np.ndarray

    @classmethod
    def of(cls, rows: pd.DataFrame, x_arcsec: np.ndarray, y_arcsec: np.ndarray) -> "HostLight":
        """From the population's ``host_*`` columns, centred at (``x_arcsec``, ``y_arcsec``)."""
        col = {k: rows[f"host_{k}"].to_numpy(float) for k in ("r_mag", "g_minus_r", "r_minus_z", "reff_arcsec", "sersic_n", "q",
                                                               "phi_rad")}
        return cls(col["r_mag"], col["g_minus_r"], col["r_minus_z"], col["reff_arcsec"], col["sersic_n"], col["q"], col["phi_rad"],
                   _mag_to_nmgy(col["r_mag"]), x_arcsec, y_arcsec)


def _mag_to_nmgy(m):
    return 10.0 ** (-0.4 * (np.asarray(m, float) - 22.5))


def band_fluxes(r_mag, g_minus_r, r_minus_z) -> np.ndarray:
    """(K, 3) g, r, z fluxes in nMgy."""
    r_mag, g_minus_r, r_minus_z = (np.asarray(a, float) for a in (r_mag, g_minus_r, r_minus_z))
    return np.stack([_mag_to_nmgy(r_mag + g_minus_r), _mag_to_nmgy(r_mag), _mag_to_nmgy(r_mag - r_minus_z)], axis=1)


def _colour_split(total_r_nmgy: np.ndarray, fractions: list[np.ndarray], colours: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Band fluxes of parts that carry ``fractions`` of the r flux with their own colours."""
    return [band_fluxes(22.5 - 2.5 * np.log10(np.maximum(total_r_nmgy * f, 1e-30)), gr, rz) for f, (gr, rz) in zip(fractions, colours)]


def _u(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


def _blue_gr(u: np.ndarray) -> np.ndarray:
    """Star-forming g - r (observed, z ~ 0.1-1) from a uniform."""
    return _u(u, 0.2, 0.6)


def _blue_rz(u: np.ndarray) -> np.ndarray:
    """Star-forming r - z from a uniform."""
    return _u(u, 0.1, 0.5)


def _power_law_mags(u: np.ndarray, slope: float, m_lo: float, m_hi: float) -> np.ndarray:
    """Inverse CDF of dN/dm ~ 10^(slope m) on [m_lo, m_hi]."""
    a, b = 10.0 ** (slope * m_lo), 10.0 ** (slope * m_hi)
    return np.log10(a + u * (b - a)) / slope


def _power_law_count(density_at_ref: float, slope: float, ref: float, m_lo: float, m_hi: float) -> float:
    """Integral of density_at_ref 10^(slope (m - ref)) dm over [m_lo, m_hi] (per deg^2)."""
    return density_at_ref / (slope * math.log(10.0)) * (10.0 ** (slope * (m_hi - ref)) - 10.0 ** (slope * (m_lo - ref)))


class _Pieces:
    def __init__(self):
        self.by_profile: dict[str, list[Components]] = {}

    def add(self, profile: str, stamp: np.ndarray, flux: np.ndarray, **params) -> None:
        if len(stamp) == 0:
            return
        self.by_profile.setdefault(profile, []).append(
            Components(np.asarray(stamp), {k: np.broadcast_to(np.asarray(v, float), (len(stamp),)).copy() for k, v in params.items()},
                       np.asarray(flux, float)))


# --------------------------------------------------------------------------- the scene of a batch

def sample_scene(rows: pd.DataFrame, cfg: SceneConfig, seed: int, grid_half_width_arcsec: float) -> Scene:
    """The scene of every stamp of ``rows`` (a batch of the population: host_id, host_* columns,
    psf columns). ``grid_half_width_arcsec``: half the side of the host grid (stamp + margin)."""
    key = rows["host_id"].to_numpy()
    u_c = keyed.uniforms_np(seed, keyed.STREAM_CENTRE, key, _N_CENTRE)
    u_m = keyed.uniforms_np(seed, keyed.STREAM_MORPHOLOGY, key, _N_KIND + _N_MORPH)
    u_f = keyed.uniforms_np(seed, keyed.STREAM_FIELD, key, _N_FIELD)
    u_k = keyed.uniforms_np(seed, keyed.STREAM_CORE, key, _N_CORE)

    hx, hy = host_offsets_arcsec(u_c, cfg)
    kinds = cfg.kinds_of(u_m[:, 0], _train_rows(rows))
    host = HostLight.of(rows, hx, hy)
    pieces = _Pieces()
    # an early type's core structure first (it may take a share of the host's light), then the
    # host in the morphology of its kind
    core, host_share, nuclei, psf_factor = core_structures(cfg, kinds, u_k, pieces, host)
    add_host_morphologies(pieces, kinds, u_m[:, 1:], host, host_share)

    area_deg2 = (2 * grid_half_width_arcsec) ** 2 * DEG2_PER_ARCSEC2
    n_nb, brightest_nb = add_neighbours(pieces, cfg.neighbours, u_f, area_deg2, grid_half_width_arcsec)
    stars, n_st, brightest_star = sample_stars(cfg.stars, u_f, area_deg2, grid_half_width_arcsec)
    # nuclei are point sources too: exact sub-pixel positions and fluxes with the stamp's PSF
    stars = _joined(stars, nuclei)
    has_comp = add_companions(pieces, cfg.companion_probability, u_f, host)

    columns = {"host_kind": kinds.astype(str), "host_x_arcsec": hx, "host_y_arcsec": hy, "n_neighbours": n_nb.astype(np.int64),
               "n_stars": n_st.astype(np.int64), "has_companion": has_comp.astype(np.int64),
               "brightest_neighbour_r_mag": brightest_nb, "brightest_star_r_mag": brightest_star,
               "core_kind": core.astype(str), "psf_mismatch": psf_factor}
    return Scene(hx, hy, pieces.by_profile, stars, columns)


def host_offsets_arcsec(u: np.ndarray, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of each host in arcsec from the stamp centre, from its centring uniforms ``u``
    (B, _N_CENTRE): a uniform sub-pixel phase within +-0.5 px (``cfg.subpixel``, pixels of
    ``cfg.pixel_scale_arcsec``) plus the catalogue-centroid error, Gaussian per axis with
    ``cfg.centroid_error_arcsec``."""
    B = len(u)
    hx = np.zeros(B)
    hy = np.zeros(B)
    pix = cfg.pixel_scale_arcsec
    if cfg.subpixel:
        hx += (u[:, 0] - 0.5) * pix
        hy += (u[:, 1] - 0.5) * pix
    if cfg.centroid_error_arcsec > 0:
        # one uniform -> radius (Rayleigh), the other the angle: a 2-D Gaussian per axis
        rad = cfg.centroid_error_arcsec * np.sqrt(-2.0 * np.log(u[:, 2]))
        ang = 2.0 * np.pi * u[:, 3]
        hx += rad * np.cos(ang)
        hy += rad * np.sin(ang)
    return hx, hy


def _train_rows(rows: pd.DataFrame) -> np.ndarray:
    """True on the rows of the train split (none where the batch has no ``region_split``)."""
    if "region_split" in rows.columns:
        return rows["region_split"].to_numpy() == "train"
    return np.zeros(len(rows), dtype=bool)


def _joined(a: Components, b: Components) -> Components:
    """The point sources of ``a`` then those of ``b`` (params x_arcsec, y_arcsec)."""
    return Components(np.concatenate([a.stamp, b.stamp]).astype(int), {k: np.concatenate([a.params[k], b.params[k]]) for k in a.params},
                      np.concatenate([a.flux, b.flux]))


# --------------------------------------------------------------------------- host morphologies

def add_host_morphologies(pieces: _Pieces, kinds: np.ndarray, u: np.ndarray, host: HostLight, share: np.ndarray) -> None:
    """The host of every stamp in the morphology of its kind, from its morphology uniforms ``u``
    (B, _N_MORPH): early types keep ``share`` of their light (the rest is in their core
    structure); the look-alike kinds add their companions, arms, rings, partners and tails."""
    for name in EARLY_TYPE_KINDS:
        i = np.flatnonzero(kinds == name)
        pieces.add("sersic", i, band_fluxes(host.r_mag[i], host.g_minus_r[i], host.r_minus_z[i]) * share[i, None],
                   reff_arcsec=host.reff_arcsec[i], n=host.n[i], q=host.q[i], phi_rad=host.phi_rad[i], x_arcsec=host.x_arcsec[i],
                   y_arcsec=host.y_arcsec[i])
    for name, add in (("lrg_tangential_companion", _tangential_companion), ("lrg_alignment", _alignment), ("spiral", _spiral),
                      ("ring", _ring), ("merger", _merger), ("edge_on", _edge_on)):
        i = np.flatnonzero(kinds == name)
        if len(i):
            add(pieces, i, u[i], host)


def _tangential_companion(pieces: _Pieces, i: np.ndarray, u: np.ndarray, host: HostLight) -> None:
    """A blue, elongated companion with its major axis tangential to the LRG."""
    sep, ang = _u(u[:, 0], *COMPANION_SEP_ARCSEC), 2 * np.pi * u[:, 1]
    mag = _power_law_mags(u[:, 2], COMPANION_COUNT_SLOPE_PER_MAG, *COMPANION_R_MAG)
    pieces.add("sersic", i, band_fluxes(mag, _blue_gr(u[:, 3]), _blue_rz(u[:, 4])), reff_arcsec=_u(u[:, 5], 0.2, 0.5),
               n=_u(u[:, 6], 0.5, 1.5), q=_u(u[:, 7], 0.2, 0.5), phi_rad=ang + np.pi / 2,
               x_arcsec=host.x_arcsec[i] + sep * np.cos(ang), y_arcsec=host.y_arcsec[i] + sep * np.sin(ang))


def _alignment(pieces: _Pieces, i: np.ndarray, u: np.ndarray, host: HostLight) -> None:
    """Two or three small blue galaxies around the LRG at random angles."""
    n_gal = np.where(u[:, 0] < 0.5, 2, 3)
    for j in range(3):
        k = i[n_gal > j]
        uj = u[n_gal > j, 1 + 9 * j: 10 + 9 * j]
        sep, ang = _u(uj[:, 0], 1.0, 4.0), 2 * np.pi * uj[:, 1]
        mag = _power_law_mags(uj[:, 2], COMPANION_COUNT_SLOPE_PER_MAG, *COMPANION_R_MAG)
        pieces.add("sersic", k, band_fluxes(mag, _blue_gr(uj[:, 3]), _blue_rz(uj[:, 4])),
                   reff_arcsec=_u(uj[:, 5], 0.15, 0.45), n=_u(uj[:, 6], 0.5, 1.5), q=_u(uj[:, 7], 0.3, 1.0),
                   phi_rad=np.pi * uj[:, 8], x_arcsec=host.x_arcsec[k] + sep * np.cos(ang), y_arcsec=host.y_arcsec[k] + sep * np.sin(ang))


def _spiral(pieces: _Pieces, i: np.ndarray, u: np.ndarray, host: HostLight) -> None:
    """Red bulge + disc + blue arms (the arms share the disc's scale, inclination and angle)."""
    hx, hy, phi = host.x_arcsec[i], host.y_arcsec[i], host.phi_rad[i]
    bt, arm = _u(u[:, 0], 0.1, 0.4), _u(u[:, 1], 0.3, 0.6)
    disc_re = host.reff_arcsec[i] * _u(u[:, 2], 1.0, 1.8)
    q_disc = _u(u[:, 3], 0.35, 1.0)
    f_bulge, f_disc, f_arms = bt, (1 - bt) * (1 - arm), (1 - bt) * arm
    fb, fd, fa = _colour_split(host.flux_r_nmgy[i], [f_bulge, f_disc, f_arms],
                               [(host.g_minus_r[i], host.r_minus_z[i]), (_u(u[:, 4], 0.6, 0.9), _u(u[:, 5], 0.4, 0.6)),
                                (_blue_gr(u[:, 6]), _blue_rz(u[:, 7]))])
    pieces.add("sersic", i, fb, reff_arcsec=disc_re * _u(u[:, 8], 0.15, 0.3), n=4.0, q=_u(u[:, 9], 0.7, 1.0), phi_rad=phi,
               x_arcsec=hx, y_arcsec=hy)
    pieces.add("sersic", i, fd, reff_arcsec=disc_re, n=1.0, q=q_disc, phi_rad=phi, x_arcsec=hx, y_arcsec=hy)
    pieces.add("spiral_arms", i, fa, reff_arcsec=disc_re, q=q_disc, phi_rad=phi, x_arcsec=hx, y_arcsec=hy,
               n_arms=np.where(u[:, 10] < 0.7, 2.0, 3.0), pitch_rad=np.radians(_u(u[:, 11], 12.0, 30.0)),
               arm_phase_rad=2 * np.pi * u[:, 12], sharpness=_u(u[:, 13], 2.0, 6.0))


def _ring(pieces: _Pieces, i: np.ndarray, u: np.ndarray, host: HostLight) -> None:
    """Ring galaxy: an early-type body and a blue lumpy ring."""
    hx, hy = host.x_arcsec[i], host.y_arcsec[i]
    f_ring = _u(u[:, 0], 0.15, 0.4)
    fb, fr = _colour_split(host.flux_r_nmgy[i], [1 - f_ring, f_ring],
                           [(host.g_minus_r[i], host.r_minus_z[i]), (_blue_gr(u[:, 1]), _blue_rz(u[:, 2]))])
    pieces.add("sersic", i, fb, reff_arcsec=host.reff_arcsec[i] * _u(u[:, 3], 0.4, 0.8), n=host.n[i], q=host.q[i],
               phi_rad=host.phi_rad[i], x_arcsec=hx, y_arcsec=hy)
    pieces.add("ring", i, fr, radius_arcsec=_u(u[:, 4], 1.2, 3.5), width_arcsec=_u(u[:, 5], 0.12, 0.3), q=_u(u[:, 6], 0.5, 1.0),
               phi_rad=2 * np.pi * u[:, 7], lump_amplitude=_u(u[:, 8], 0.0, 0.7), lump_order=np.floor(_u(u[:, 9], 1.0, 5.999)),
               lump_phase_rad=2 * np.pi * u[:, 10], x_arcsec=hx, y_arcsec=hy)


def _merger(pieces: _Pieces, i: np.ndarray, u: np.ndarray, host: HostLight) -> None:
    """Host + partner + one or two tidal tails."""
    hx, hy, gr, rz = host.x_arcsec[i], host.y_arcsec[i], host.g_minus_r[i], host.r_minus_z[i]
    f_tail = _u(u[:, 0], 0.05, 0.2)
    dmag = _u(u[:, 1], 0.0, 1.5)
    w_partner = 10 ** (-0.4 * dmag) / (1 + 10 ** (-0.4 * dmag))
    sep, ang = _u(u[:, 2], 1.0, 3.5), 2 * np.pi * u[:, 3]
    px, py = hx + sep * np.cos(ang), hy + sep * np.sin(ang)
    f_main, f_part = (1 - f_tail) * (1 - w_partner), (1 - f_tail) * w_partner
    two_tails = u[:, 4] < 0.5
    fm, fp, ft = _colour_split(host.flux_r_nmgy[i], [f_main, f_part, f_tail],
                               [(gr, rz), (gr - _u(u[:, 5], 0.0, 0.5), rz - _u(u[:, 6], 0.0, 0.3)),
                                (_u(u[:, 7], 0.5, 1.0), _u(u[:, 8], 0.3, 0.7))])
    pieces.add("sersic", i, fm, reff_arcsec=host.reff_arcsec[i], n=host.n[i], q=host.q[i], phi_rad=host.phi_rad[i], x_arcsec=hx,
               y_arcsec=hy)
    pieces.add("sersic", i, fp, reff_arcsec=host.reff_arcsec[i] * _u(u[:, 9], 0.5, 1.0), n=_u(u[:, 10], 1.0, 4.0),
               q=_u(u[:, 11], 0.4, 1.0), phi_rad=2 * np.pi * u[:, 12], x_arcsec=px, y_arcsec=py)
    for j, (cx, cy) in enumerate(((hx, hy), (px, py))):
        k = np.ones(len(i), bool) if j == 0 else two_tails
        share = np.where(two_tails, 0.5, 1.0)
        uj = u[:, 13 + 7 * j: 20 + 7 * j]
        pieces.add("tidal_tail", i[k], ft[k] * share[k, None], x_arcsec=cx[k], y_arcsec=cy[k], radius_arcsec=_u(uj[k, 0], 0.8, 2.0),
                   growth=_u(uj[k, 1], 0.1, 0.4), width_arcsec=_u(uj[k, 2], 0.25, 0.6), start_rad=2 * np.pi * uj[k, 3],
                   direction=np.where(uj[k, 4] < 0.5, -1.0, 1.0), length_rad=_u(uj[k, 5], 1.5, 3.5), fade_rad=_u(uj[k, 6], 1.0, 3.0))


def _edge_on(pieces: _Pieces, i: np.ndarray, u: np.ndarray, host: HostLight) -> None:
    """Edge-on disc with a small bulge."""
    hx, hy, phi = host.x_arcsec[i], host.y_arcsec[i], host.phi_rad[i]
    bt = _u(u[:, 0], 0.1, 0.3)
    fb, fd = _colour_split(host.flux_r_nmgy[i], [bt, 1 - bt],
                           [(host.g_minus_r[i], host.r_minus_z[i]), (_u(u[:, 1], 0.7, 1.1), _u(u[:, 2], 0.4, 0.7))])
    disc_re = host.reff_arcsec[i] * _u(u[:, 3], 1.0, 2.0)
    pieces.add("sersic", i, fb, reff_arcsec=disc_re * _u(u[:, 4], 0.15, 0.3), n=4.0, q=_u(u[:, 5], 0.6, 1.0), phi_rad=phi,
               x_arcsec=hx, y_arcsec=hy)
    pieces.add("sersic", i, fd, reff_arcsec=disc_re, n=1.0, q=_u(u[:, 6], 0.1, 0.25), phi_rad=phi, x_arcsec=hx, y_arcsec=hy)


# --------------------------------------------------------------------------- the field

def add_neighbours(pieces: _Pieces, c: NeighbourCounts | None, u_field: np.ndarray, area_deg2: float,
                   half_width_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour galaxies over the host grid (``area_deg2``, +-``half_width_arcsec``) from the
    field uniforms ``u_field`` (B, _N_FIELD): a Poisson number from the r-band counts, each blue or
    red with a size-magnitude relation. Returns (count per stamp, r mag of its brightest; NaN
    where none)."""
    B = len(u_field)
    n_nb = np.zeros(B, int)
    brightest = np.full(B, np.nan)
    if c is None:
        return n_nb, brightest
    lam = _power_law_count(c.density_r24_per_deg2_per_mag, c.slope_per_mag, 24.0, c.r_mag_min, c.r_mag_max) * area_deg2
    n_nb = np.minimum(stats.poisson.ppf(u_field[:, 0], lam).astype(int), MAX_NEIGHBOURS)
    un = u_field[:, _FIELD_NEIGHBOURS: _FIELD_STARS].reshape(B, MAX_NEIGHBOURS, _N_PER_NEIGHBOUR)
    present = np.arange(MAX_NEIGHBOURS)[None, :] < n_nb[:, None]
    s_idx, slot = np.nonzero(present)
    v = un[s_idx, slot]
    mag = _power_law_mags(v[:, 0], c.slope_per_mag, c.r_mag_min, c.r_mag_max)
    blue = v[:, 1] < c.blue_fraction
    # size-magnitude: ~0.5 arcsec at r = 22, 0.1 dex scatter
    z = special.ndtri(np.clip(v[:, 2], 1e-12, 1 - 1e-12))
    reff = 0.5 * 10 ** (-0.1 * (mag - 22.0) + 0.1 * z)
    gr = np.where(blue, _u(v[:, 3], 0.2, 0.7), _u(v[:, 3], 1.0, 1.8))
    rz = np.where(blue, _u(v[:, 4], 0.1, 0.6), _u(v[:, 4], 0.6, 1.2))
    pieces.add("sersic", s_idx, band_fluxes(mag, gr, rz), reff_arcsec=np.clip(reff, 0.08, 3.0),
               n=np.where(blue, _u(v[:, 5], 0.6, 1.5), _u(v[:, 5], 2.0, 4.0)), q=_u(v[:, 6], 0.2, 1.0), phi_rad=np.pi * v[:, 7],
               x_arcsec=_u(v[:, 8], -1, 1) * half_width_arcsec, y_arcsec=_u(v[:, 9], -1, 1) * half_width_arcsec)
    if len(s_idx):
        brightest = pd.Series(mag).groupby(s_idx).min().reindex(range(B)).to_numpy()
    return n_nb, brightest


def sample_stars(c: StarCounts | None, u_field: np.ndarray, area_deg2: float,
                 half_width_arcsec: float) -> tuple[Components, np.ndarray, np.ndarray]:
    """Stars over the host grid from the field uniforms (a Poisson number, r from the star counts,
    colours along the stellar locus): (the point sources, count per stamp, r mag of the
    brightest; NaN where none)."""
    B = len(u_field)
    none = Components(np.zeros(0, int), {"x_arcsec": np.zeros(0), "y_arcsec": np.zeros(0)}, np.zeros((0, 3)))
    if c is None:
        return none, np.zeros(B, int), np.full(B, np.nan)
    lam = c.density_per_deg2 * area_deg2
    n_st = np.minimum(stats.poisson.ppf(u_field[:, 1], lam).astype(int), MAX_STARS)
    us = u_field[:, _FIELD_STARS: _FIELD_COMPANION].reshape(B, MAX_STARS, _N_PER_STAR)
    star_stamp, slot = np.nonzero(np.arange(MAX_STARS)[None, :] < n_st[:, None])
    v = us[star_stamp, slot]
    mag = _power_law_mags(v[:, 0], c.slope_per_mag, c.r_mag_min, c.r_mag_max)
    gr = _u(v[:, 1], 0.3, 1.4)
    rz = 0.5 * gr - 0.05 + _u(v[:, 2], -0.1, 0.1)  # along the stellar locus
    params = {"x_arcsec": _u(v[:, 3], -1, 1) * half_width_arcsec, "y_arcsec": _u(v[:, 4], -1, 1) * half_width_arcsec}
    brightest = np.full(B, np.nan)
    if len(star_stamp):
        brightest = pd.Series(mag).groupby(star_stamp).min().reindex(range(B)).to_numpy()
    return Components(star_stamp, params, band_fluxes(mag, gr, rz)), n_st, brightest


def add_companions(pieces: _Pieces, probability: float, u_field: np.ndarray, host: HostLight) -> np.ndarray:
    """With ``probability``, a close early-type companion of the host, 2-6 arcsec away and 0.5-3
    mag fainter, from the field uniforms. Returns which stamps have one."""
    if probability <= 0:
        return np.zeros(len(u_field), bool)
    uc = u_field[:, _FIELD_COMPANION: _FIELD_COMPANION + _N_COMPANION]
    has_comp = u_field[:, 2] < probability
    i = np.flatnonzero(has_comp)
    v = uc[i]
    sep, ang = _u(v[:, 0], 2.0, 6.0), 2 * np.pi * v[:, 1]
    dmag = _u(v[:, 2], 0.5, 3.0)
    pieces.add("sersic", i, band_fluxes(host.r_mag[i] + dmag, host.g_minus_r[i] + _u(v[:, 3], -0.1, 0.1),
                                        host.r_minus_z[i] + _u(v[:, 4], -0.1, 0.1)),
               reff_arcsec=np.clip(host.reff_arcsec[i] * 10 ** (-0.2 * dmag), 0.15, None), n=_u(v[:, 5], 2.0, 4.0),
               q=_u(v[:, 6], 0.5, 1.0), phi_rad=np.pi * v[:, 7], x_arcsec=host.x_arcsec[i] + sep * np.cos(ang),
               y_arcsec=host.y_arcsec[i] + sep * np.sin(ang))
    return has_comp


# --------------------------------------------------------------------------- early-type cores

def core_structures(cfg: SceneConfig, kinds: np.ndarray, u: np.ndarray, pieces: _Pieces,
                    host: HostLight) -> tuple[np.ndarray, np.ndarray, Components, np.ndarray]:
    """The core structure of each early-type host (``cfg.core_structures``: fractions, the rest
    ``smooth``; other host kinds ``none``), from its own keyed uniforms ``u`` (B, _N_CORE). Adds
    the extended parts to ``pieces``; returns (core kind per stamp, the share of the host's light
    its main profile keeps, the nuclei as point sources, the factor on the true PSF FWHM).

    - colour_gradient: an inner de Vaucouleurs of 0.15-0.35 R_e carrying 15-35 % of the light,
      0-0.25 mag bluer or redder in g - r (early types' colour gradients);
    - blue_nucleus: a point source of 0.5-3 % of the light, g - r 0.2-0.6, within 0.05 arcsec;
    - off_centre_nucleus: the same 0.2-0.6 arcsec from the centre;
    - double_nucleus: a second compact de Vaucouleurs (0.1-0.25 R_e, 10-30 % of the light) 0.4-1.2
      arcsec away;
    - core_companion: a compact blue galaxy (r 21-24.5 from the field's counts, 0.1-0.3 arcsec) 0.3-1.2
      arcsec from the centre, overlapping the core;
    - psf_mismatch: the stamp's true PSF 3-8 % broader or narrower than the one its metadata states
      (``psf_fwhm_used_*``), for host, field and arc alike (PSF models are not exact)."""
    core = core_kinds(cfg, kinds, u)
    share = np.ones(len(kinds))
    _extended_cores(pieces, core, u, host, share)
    nuclei = _nuclei(core, u, host, share)
    psf = np.ones(len(kinds))
    i = np.flatnonzero(core == "psf_mismatch")
    if len(i):
        psf[i] = 1.0 + np.where(u[i, 1] < 0.5, -1.0, 1.0) * _u(u[i, 2], 0.03, 0.08)
    return core, share, nuclei, psf


def core_kinds(cfg: SceneConfig, kinds: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The core structure of each stamp: one of ``cfg.core_structures`` (by its fraction, from the
    core uniform ``u[:, 0]``) or ``smooth`` for an early-type host, ``none`` for the others."""
    early = np.isin(kinds, EARLY_TYPE_KINDS)
    core = np.where(early, "smooth", "none").astype(object)
    names = [k for k in CORE_KINDS if cfg.core_structures.get(k, 0.0) > 0]
    if names:
        cum = np.cumsum([cfg.core_structures[k] for k in names])
        pick = np.searchsorted(cum, u[:, 0], side="right")
        has = early & (pick < len(names))
        core[has] = np.array(names, dtype=object)[pick[has]]
    return core


def _extended_cores(pieces: _Pieces, core: np.ndarray, u: np.ndarray, host: HostLight, share: np.ndarray) -> None:
    """The extended core structures (colour gradient, double nucleus, core companion) added to
    ``pieces``; the host's ``share`` reduced by the light they take from it."""
    hx, hy = host.x_arcsec, host.y_arcsec
    i = np.flatnonzero(core == "colour_gradient")
    if len(i):
        f = _u(u[i, 1], 0.15, 0.35)
        d = _u(u[i, 2], -0.25, 0.25)
        share[i] -= f
        pieces.add("sersic", i, band_fluxes(22.5 - 2.5 * np.log10(host.flux_r_nmgy[i] * f), host.g_minus_r[i] + d,
                                            host.r_minus_z[i] + d / 2),
                   reff_arcsec=host.reff_arcsec[i] * _u(u[i, 3], 0.15, 0.35), n=4.0, q=host.q[i], phi_rad=host.phi_rad[i],
                   x_arcsec=hx[i], y_arcsec=hy[i])
    i = np.flatnonzero(core == "double_nucleus")
    if len(i):
        f = _u(u[i, 1], 0.10, 0.30)
        share[i] -= f
        r, a = _u(u[i, 2], 0.4, 1.2), 2 * np.pi * u[i, 3]
        pieces.add("sersic", i, band_fluxes(22.5 - 2.5 * np.log10(host.flux_r_nmgy[i] * f), host.g_minus_r[i] + _u(u[i, 4], -0.05, 0.05),
                                            host.r_minus_z[i] + _u(u[i, 5], -0.05, 0.05)),
                   reff_arcsec=np.clip(host.reff_arcsec[i] * _u(u[i, 6], 0.10, 0.25), 0.08, None), n=4.0, q=_u(u[i, 7], 0.6, 1.0),
                   phi_rad=host.phi_rad[i], x_arcsec=hx[i] + r * np.cos(a), y_arcsec=hy[i] + r * np.sin(a))
    i = np.flatnonzero(core == "core_companion")
    if len(i):
        r, a = _u(u[i, 1], 0.3, 1.2), 2 * np.pi * u[i, 2]
        mag = _power_law_mags(u[i, 3], COMPANION_COUNT_SLOPE_PER_MAG, 21.0, 24.5)
        pieces.add("sersic", i, band_fluxes(mag, _u(u[i, 4], 0.2, 0.6), _u(u[i, 5], 0.1, 0.5)), reff_arcsec=_u(u[i, 6], 0.1, 0.3),
                   n=1.0, q=_u(u[i, 7], 0.4, 1.0), phi_rad=np.pi * u[i, 1], x_arcsec=hx[i] + r * np.cos(a), y_arcsec=hy[i] + r * np.sin(a))


def _nuclei(core: np.ndarray, u: np.ndarray, host: HostLight, share: np.ndarray) -> Components:
    """The blue and off-centre nuclei as point sources (params x_arcsec, y_arcsec); the host's
    ``share`` reduced by their light."""
    ns, nx, ny, nf = [], [], [], []
    for name, (lo, hi) in (("blue_nucleus", (0.0, 0.05)), ("off_centre_nucleus", (0.2, 0.6))):
        i = np.flatnonzero(core == name)
        if len(i):
            f = _u(u[i, 1], 0.005, 0.03)
            share[i] -= f
            r, a = _u(u[i, 2], lo, hi), 2 * np.pi * u[i, 3]
            ns.append(i)
            nx.append(host.x_arcsec[i] + r * np.cos(a))
            ny.append(host.y_arcsec[i] + r * np.sin(a))
            nf.append(band_fluxes(22.5 - 2.5 * np.log10(host.flux_r_nmgy[i] * f), _u(u[i, 4], 0.2, 0.6), _u(u[i, 5], 0.0, 0.4)))
    if not ns:
        return Components(np.zeros(0, int), {"x_arcsec": np.zeros(0), "y_arcsec": np.zeros(0)}, np.zeros((0, 3)))
    return Components(np.concatenate(ns), {"x_arcsec": np.concatenate(nx), "y_arcsec": np.concatenate(ny)}, np.concatenate(nf))
