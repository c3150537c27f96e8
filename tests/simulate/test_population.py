"""The physical lens population: distances against astropy, lensing against its formula, colours
against direct integration, the LensPop-detectable subset against the LensPop forecast, and the
label independence of hosts in the simulated survey."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from dhs.simulate import physical
from dhs.params import ParamsError
from dhs.simulate.config import SimConfig
from dhs.simulate.cosmology import ARCSEC_PER_RAD, C_KMS, Cosmology, lensing_theta_e
from dhs.simulate.detectability import PERCENTILES, detectable_lenspop, lenspop_percentiles, lenspop_table
from dhs.simulate.photometry import host_kcorr, sf_band_fnu_direct, sf_band_fnu_grz
from dhs.simulate.population import sample_population

PARAMS = yaml.safe_load(open("params.yaml"))["simulate"]


@pytest.fixture(scope="module")
def systems():
    return physical.sample(150_000, np.random.default_rng(7), PARAMS["physical"])


def test_distances_match_astropy():
    from astropy.cosmology import FlatLambdaCDM

    ref = FlatLambdaCDM(H0=70.0, Om0=0.3, Tcmb0=0.0)
    ours = Cosmology(70.0, 0.3)
    z = np.array([0.1, 0.3, 0.5, 0.8, 1.2, 2.0, 3.5])
    np.testing.assert_allclose(ours.comoving(z), ref.comoving_distance(z).value, rtol=1e-5)
    np.testing.assert_allclose(ours.angular_diameter(z), ref.angular_diameter_distance(z).value, rtol=1e-5)
    np.testing.assert_allclose(ours.distance_modulus(z), ref.distmod(z).value, atol=1e-4)
    dls = ref.angular_diameter_distance_z1z2(0.4, 1.7).value / ref.angular_diameter_distance(1.7).value
    assert ours.dls_over_ds(0.4, 1.7) == pytest.approx(dls, rel=1e-5)
    np.testing.assert_allclose(ours.age_gyr(z), ref.age(z).value, rtol=2e-3)


def test_theta_e_follows_sigma_and_distances(systems):
    cosmo = Cosmology(70.0, 0.3)
    s = systems.sample(2000, random_state=1)
    expected = lensing_theta_e(s.sigma_v_kms, s.z_l, s.z_s, cosmo)
    np.testing.assert_allclose(s.theta_e_arcsec, expected, rtol=1e-6)  # z_l from the tabulated inverse of chi(z)
    # an SIS of 250 km/s at z_l 0.5, z_s 2 has theta_E = 4 pi (sigma/c)^2 D_ls/D_s
    one = 4 * math.pi * (250.0 / C_KMS) ** 2 * float(cosmo.dls_over_ds(0.5, 2.0)) * ARCSEC_PER_RAD
    assert 1.0 < one < 1.2
    assert (systems.z_s > systems.z_l).all()
    # sources fall uniformly in area inside theta_E
    frac = (systems.src_x_arcsec**2 + systems.src_y_arcsec**2) / systems.theta_e_arcsec**2
    assert stats.kstest(frac, "uniform").pvalue > 1e-3


def test_population_reaches_below_detectability(systems):
    assert systems.src_r_mag.max() == pytest.approx(27.0, abs=0.01)
    assert systems.src_r_mag.median() > 25.5  # counts rise steeply: most sources are faint
    assert (systems.host_r_mag - systems.host_r_minus_z <= 20.0 + 1e-9).all()  # the host cut (z band)


def test_star_forming_colours_match_direct_integration():
    rng = np.random.default_rng(3)
    z = rng.uniform(0.3, 4.5, 400)
    beta = rng.uniform(-2.5, -1.0, 400)
    brk = rng.uniform(1.0, 1.6, 400)
    tab = sf_band_fnu_grz(z, beta, brk)
    for j, b in enumerate("grz"):
        direct = sf_band_fnu_direct(z, beta, brk, b)
        ok = direct > 1e-6 * direct.max()
        np.testing.assert_allclose(-2.5 * np.log10(tab[ok, j]), -2.5 * np.log10(direct[ok]), atol=0.03)
    # the Lyman break: g drops out beyond z ~ 3.5
    gr_low = -2.5 * np.log10(sf_band_fnu_grz(2.0, -2.0, 1.2)[0] / sf_band_fnu_grz(2.0, -2.0, 1.2)[1])
    gr_high = -2.5 * np.log10(sf_band_fnu_grz(4.2, -2.0, 1.2)[0] / sf_band_fnu_grz(4.2, -2.0, 1.2)[1])
    assert gr_high > gr_low + 1.0


def test_host_k_corrections_vanish_at_z0_and_redden_with_z():
    assert host_kcorr("r", 0.0) == pytest.approx(0.0, abs=1e-3)
    z = np.array([0.1, 0.3, 0.5])
    gr = host_kcorr("g", z) - host_kcorr("r", z)
    assert np.all(np.diff(gr) > 0)  # the 4000 A break moves through g: LRGs redden


def test_detectable_subset_matches_the_lenspop_forecast(systems):
    """Applying LensPop's detectability cuts (DES full-coadd conditions, analytic magnification and
    S/N) to our population gives distributions close to the LensPop table's."""
    det = detectable_lenspop(systems)
    d = systems[det.detectable.to_numpy()]
    assert 0.01 < len(d) / len(systems) < 0.06
    ref = lenspop_percentiles()
    ours = {"theta_e_arcsec": d.theta_e_arcsec, "src_r_mag": d.src_r_mag, "host_r_mag": d.host_r_mag,
            "lensed_src_r_mag": d.src_r_mag - 2.5 * np.log10(d.mu_ext_sis), "src_dmag": d.src_dmag}
    med = {k: float(np.median(v)) for k, v in ours.items()}
    assert med["theta_e_arcsec"] == pytest.approx(ref["theta_e_arcsec"][2], rel=0.2)
    assert med["src_r_mag"] == pytest.approx(ref["src_r_mag"][2], abs=0.4)
    assert med["host_r_mag"] == pytest.approx(ref["host_r_mag"][2], abs=0.8)
    assert med["lensed_src_r_mag"] == pytest.approx(ref["lensed_src_r_mag"][2], abs=0.4)
    assert med["src_dmag"] == pytest.approx(ref["src_dmag"][2], abs=1.0)
    assert len(lenspop_table()) == 945 and PERCENTILES[2] == 50


def test_survey_hosts_are_label_independent_and_controls_carry_no_source():
    """Training shares one host population between the classes (pitfall 9); val and test controls
    come from the search sample (volume-weighted), whose hosts are less massive than lenses'."""
    p = copy.deepcopy(PARAMS)
    p.update(device="cpu", n_stamps=6000)
    cfg = SimConfig.from_params(p)
    assert cfg.control_hosts == "parent"
    pop = sample_population(cfg)
    ctl, inj = pop[pop.is_control == 1], pop[pop.is_control == 0]
    train = pop[pop.region_split == "train"]
    for col in ("host_r_mag", "host_reff_arcsec", "host_g_minus_r", "z_l", "sigma_v_kms"):
        assert stats.ks_2samp(train.loc[train.is_control == 1, col], train.loc[train.is_control == 0, col]).pvalue > 0.01, col
    measure = pop[pop.region_split != "train"]
    mc, mi = measure[measure.is_control == 1], measure[measure.is_control == 0]
    assert mc.sigma_v_kms.median() < mi.sigma_v_kms.median() - 20
    for col in ("psfsize_r", "psfdepth_r", "ebv", "bad_pixel_frac"):   # conditions stay label-independent everywhere
        assert stats.ks_2samp(mc[col], mi[col]).pvalue > 0.01, col
    for col in ("theta_e_arcsec", "src_r_mag", "z_s", "src_x_arcsec"):
        assert (ctl[col] == 0).all(), col
    assert (inj.theta_e_arcsec > 0).all() and (inj.z_s > inj.z_l).all()
    np.testing.assert_allclose(inj.src_dmag, inj.src_r_mag - inj.host_r_mag)
    # deterministic given the seed
    again = sample_population(cfg)
    assert again.equals(pop)


def test_unknown_physical_params_are_refused():
    p = copy.deepcopy(PARAMS)
    p["physical"] = {**p["physical"], "src_mag_maxx": 26}
    with pytest.raises(ParamsError, match="unknown keys \\['src_mag_maxx'\\] in 'simulate.physical'"):
        SimConfig.from_params(p)
    p["physical"] = {}
    p["population"] = "lenspop2"
    with pytest.raises(ParamsError, match="simulate.population must be one of"):
        SimConfig.from_params(p)


def test_the_train_split_takes_its_own_overrides_and_the_measured_splits_keep_the_population():
    p = copy.deepcopy(PARAMS)
    p.update(device="cpu", n_stamps=4000, n_regions=40, physical_train={"src_mag_max": 24.0})
    pop = sample_population(SimConfig.from_params(p))
    inj = pop[pop.is_control == 0]
    train, measured = inj[inj.region_split == "train"], inj[inj.region_split != "train"]
    assert len(train) > 500 and len(measured) > 300
    assert train.src_r_mag.max() <= 24.0
    assert (measured.src_r_mag > 24.0).mean() > 0.5  # the physical population reaches r = 27
    # controls and injections of one split still share one host population
    tr = pop[pop.region_split == "train"]
    assert stats.ks_2samp(tr[tr.is_control == 1].host_r_mag, tr[tr.is_control == 0].host_r_mag).pvalue > 0.01
    # without overrides every split is drawn alike
    p["physical_train"] = {}
    plain = sample_population(SimConfig.from_params(p))
    assert (plain[(plain.is_control == 0) & (plain.region_split == "train")].src_r_mag > 24.0).mean() > 0.5
    p["physical_train"] = {"src_mag_maxx": 24.0}
    with pytest.raises(ParamsError, match="unknown keys \\['src_mag_maxx'\\] in 'simulate.physical_train'"):
        SimConfig.from_params(p)
