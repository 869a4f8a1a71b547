"""Noise-level-blind DnCNN training (``noise_snr_range``): the synthetic inputs, their statistics,
determinism, the card, the default left as it was, and errors that name the key."""
import copy
import json

import numpy as np
import pytest
import torch
import yaml

from mrichain.plan.config import ConfigError, validate_config
from mrichain.denoise import dncnn as dn
from mrichain.denoise import noise_levels as nl
from mrichain.io import save_image
from mrichain.scoring.metrics import psnr
from mrichain.slices import SliceDataset

from dag import ROOT
SHAPE = (24, 28, 8)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
PARAMS = {"epochs": 2, "batch_size": 4, "max_batches_per_epoch": 3, "depth": 3, "channels": 8, "lr": 2e-3}


def _phantom(seed, sigma=0.004):
    """Brain mask, noise-free image (nested ellipsoids + a smooth ramp), an 8-coil RSS at ``sigma``."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    r = np.sqrt((x / 0.85) ** 2 + (y / 0.85) ** 2 + (z / 1.2) ** 2) * rng.uniform(0.9, 1.1)
    labels = np.digitize(-r, [-0.95, -0.75, -0.45])  # 0 outside, 3 in the core
    labels[:, :, 0] = 0
    clean = (np.array([0.0, 0.02, 0.05, 0.07])[labels] * (1 + 0.2 * x)).astype(np.float32)
    noisy = nl.coil_magnitude(clean, sigma, 8, rng)
    return labels > 0, clean, noisy


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise_levels")
    items = []
    for i in range(3):
        mask, clean, noisy = _phantom(i)
        p = {k: root / f"sub-{i}_{k}.nii.gz" for k in ("input", "target", "mask")}
        save_image(noisy, AFFINE, p["input"])
        save_image(clean, AFFINE, p["target"])
        save_image(mask, AFFINE, p["mask"], dtype=np.uint8)
        items.append({k: str(v) for k, v in p.items()})
    return {"train": items[:2], "val": items[2:]}


# ---------------------------------------------------------------- the noise and the draws


@pytest.mark.parametrize("n_coils", [1, 4])
def test_coil_magnitude_is_the_rss_of_noisy_coil_images(n_coils):
    """The shortcut (noncentral chi from 2C normals' worth of draws) has the distribution of the
    RSS of C coil images S_c m + n_c with sum |S_c|^2 = 1, as the acquisition makes them."""
    rng = np.random.default_rng(0)
    m, sigma, n = np.array([0.0, 0.5, 3.0], np.float32), 1.0, 200_000
    shortcut = nl.coil_magnitude(np.repeat(m[:, None], n, 1), sigma, n_coils, rng)
    sens = rng.standard_normal(n_coils) + 1j * rng.standard_normal(n_coils)
    sens /= np.sqrt((np.abs(sens) ** 2).sum())
    noise = sigma * (rng.standard_normal((n_coils, 3, n)) + 1j * rng.standard_normal((n_coils, 3, n)))
    rss = np.sqrt((np.abs(sens[:, None, None] * m[None, :, None] + noise) ** 2).sum(0))
    np.testing.assert_allclose(shortcut.mean(1), rss.mean(1), rtol=0.01)
    np.testing.assert_allclose(shortcut.std(1), rss.std(1), rtol=0.02)
    if n_coils == 1:  # Rician background: Rayleigh mean sigma sqrt(pi / 2)
        assert shortcut[0].mean() == pytest.approx(np.sqrt(np.pi / 2), rel=0.01)


def test_snr_draws_are_log_uniform_in_range():
    rng = np.random.default_rng(1)
    draws = np.array([nl.draw_snr(rng, 10.0, 90.0) for _ in range(4000)])
    assert draws.min() >= 10 and draws.max() <= 90
    assert np.median(draws) == pytest.approx(30.0, rel=0.05)  # sqrt(10 * 90), not the midpoint 50
    assert np.mean(draws < 30) == pytest.approx(0.5, abs=0.03)


# ---------------------------------------------------------------- the training items


def _dataset(manifest, **kw):
    return nl.NoiseLevelSlices(manifest["train"], dn._load_target, snr_range=(8.0, 60.0), n_coils=8, **kw)


def test_items_get_varying_noise_at_the_drawn_snr(manifest):
    ds = _dataset(manifest)
    torch.manual_seed(0)
    snrs, measured = [], []
    for _ in range(3):
        for i in range(len(ds)):
            s = ds[i]
            brain = s["mask"] > 0
            # SNR of the item as acquire defines it: the volume's mean brain signal / noise SD
            vi = ds.index[i][0]
            scale = float(s["target"][brain].mean()) / float(ds.volumes[vi]["target"][:, :, ds.index[i][1]][
                ds.volumes[vi]["mask"][:, :, ds.index[i][1]] > 0].mean())
            sd = float((s["input"] - s["target"])[brain].std())
            snrs.append(float(s["snr"]))
            measured.append(ds.brain_mean[vi] * scale / sd)
    snrs, measured = np.array(snrs), np.array(measured)
    assert snrs.min() >= 8 and snrs.max() <= 60 and snrs.max() / snrs.min() > 3  # the level varies
    # the noise is at the drawn level (a few hundred brain voxels per slice: +-15 %)
    assert np.median(measured / snrs) == pytest.approx(1.0, abs=0.1)
    assert np.corrcoef(np.log(snrs), np.log(measured))[0, 1] > 0.9


def test_items_are_drawn_from_the_seed(manifest):
    ds = _dataset(manifest, flip_axes=(0,))

    def draw(seed):
        torch.manual_seed(seed)
        return [ds[i] for i in range(4)]

    a, b, c = draw(5), draw(5), draw(6)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not all(torch.equal(x["input"], y["input"]) for x, y in zip(a, c))
    # the target is the noise-free slice, scaled as the synthetic volume would be at inference
    assert float((a[0]["input"] - a[0]["target"]).abs().max()) > 0


def test_scale_follows_the_noisy_volume_as_at_inference(manifest):
    """The input is divided by the 99th percentile of the volume at the drawn SNR (estimated on a
    subsample), as the DnCNN divides a real input by its own 99th percentile."""
    from mrichain.slices import percentile_scale

    ds = _dataset(manifest)
    vol = ds.volumes[0]["target"]
    for snr in (8.0, 60.0):
        sigma = ds.brain_mean[0] / snr
        full = percentile_scale(nl.coil_magnitude(vol, sigma, 8, np.random.default_rng(0)))
        sub = percentile_scale(nl.coil_magnitude(ds.subsample[0], sigma, 8, np.random.default_rng(1)))
        assert sub == pytest.approx(full, rel=0.03)
    assert percentile_scale(nl.coil_magnitude(vol, ds.brain_mean[0] / 8, 8, np.random.default_rng(0))) > \
        1.05 * percentile_scale(vol)  # at low SNR the noise lifts the percentile: it matters


# ---------------------------------------------------------------- the trainer


def test_default_off_trains_exactly_as_before(manifest, tmp_path):
    """Absent or None: the manifest's pairs through the plain SliceDataset; identical weights,
    losses and card (no noise_levels entry, so no change to the resume fingerprint)."""
    a = dn.train(manifest, PARAMS, str(tmp_path / "a.pt"), seed=3, progress=False)
    b = dn.train(manifest, {**PARAMS, "noise_snr_range": None, "noise_coils": None}, str(tmp_path / "b.pt"),
                 seed=3, progress=False)
    assert [r["train_loss"] for r in a.curve] == [r["train_loss"] for r in b.curve]
    sa, sb = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    card = json.loads((tmp_path / "a.json").read_text())
    assert "noise_levels" not in card and nl.trained_snr_range(card) is None
    plain = SliceDataset(manifest["train"], dn._load_item, mask_key="mask")
    first = plain[0]
    np.testing.assert_array_equal(first["input"][0].numpy(), np.asarray(
        dn._load_item(manifest["train"][0])["input"][:, :, plain.index[0][1]]))


def test_noise_blind_training_changes_inputs_and_records_the_range(manifest, tmp_path):
    params = {**PARAMS, "noise_snr_range": [10, 40], "noise_coils": 8}
    a = dn.train(manifest, params, str(tmp_path / "a.pt"), seed=3, progress=False)
    b = dn.train(manifest, params, str(tmp_path / "b.pt"), seed=3, progress=False)
    plain = dn.train(manifest, PARAMS, str(tmp_path / "p.pt"), seed=3, progress=False)
    losses = [r["train_loss"] for r in a.curve]
    assert losses == [r["train_loss"] for r in b.curve]  # same seed, same noise, same run
    assert losses != [r["train_loss"] for r in plain.curve]  # other inputs than the manifest's
    card = json.loads((tmp_path / "a.json").read_text())
    assert nl.trained_snr_range(card) == (10.0, 40.0)
    assert card["noise_levels"]["n_coils"] == 8 and "log-uniform" in card["noise_levels"]["distribution"]
    other = dn.train(manifest, params, str(tmp_path / "c.pt"), seed=4, progress=False)
    assert [r["train_loss"] for r in other.curve] != losses


@pytest.mark.parametrize("bad", [[0, 20], [30, 10], [15], "high", [10, float("inf")]])
def test_bad_snr_range_is_an_error_naming_the_key(manifest, tmp_path, bad):
    with pytest.raises(ValueError, match="noise_snr_range"):
        dn.train(manifest, {**PARAMS, "noise_snr_range": bad}, str(tmp_path / "m.pt"), seed=0, progress=False)


@pytest.mark.parametrize("bad, where", [([0, 20], "noise_snr_range[0]': 0 is out of range"),
                                        ([30, 10], "noise_snr_range': lower SNR 30 must be below upper SNR 10"),
                                        ([15], "noise_snr_range': [15] is too short")])
def test_config_check_names_the_key(bad, where):
    cfg = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    ok = copy.deepcopy(cfg)
    ok["denoise"]["params"]["dncnn"]["noise_snr_range"] = [15, 50]
    validate_config(ok)
    cfg["denoise"]["params"]["dncnn"]["noise_snr_range"] = bad
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    assert f"config key 'denoise.params.dncnn.{where}" in str(exc.value)


def test_noise_blind_model_beats_its_input_at_an_unseen_snr(manifest, tmp_path):
    """Trained briefly over SNR 10-40, at SNR 6 (outside the range, and far below the manifest's
    own pairs) the model's output is closer to the truth than its input is."""
    from mrichain.slices import image_like

    params = {**PARAMS, "epochs": 3, "max_batches_per_epoch": 12, "channels": 16, "depth": 5,
              "noise_snr_range": [10, 40], "noise_coils": 8}
    dn.train(manifest, params, str(tmp_path / "m.pt"), seed=0, progress=False)
    mask, clean, _ = _phantom(7)
    noisy = nl.coil_magnitude(clean, clean[mask].mean() / 6.0, 8, np.random.default_rng(7))
    out = np.asarray(dn.dncnn(image_like(noisy, AFFINE), model=str(tmp_path / "m.pt")).dataobj)
    assert psnr(clean, out, mask=mask) > psnr(clean, noisy, mask=mask) + 0.25  # 0.66 dB when written


def test_workflow_passes_the_acquisitions_coils_only_when_on(tmp_path):
    """Dry run of the DnCNN's training job: with a range, its params carry acquire.n_coils (the
    synthetic noise is the RSS of the acquisition's coils); without, its params are as before."""
    from dag import TEST_CONFIG, snakemake

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    commands = {}
    for name, extra in (("off", {}), ("on", {"noise_snr_range": [10, 60]})):
        c = copy.deepcopy(cfg)
        c["denoise"]["params"]["dncnn"].update(extra)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(c))
        proc = snakemake(tmp_path / name, "-n", "-p", "models/denoise-dncnn.pt", configfile=path)
        commands[name] = next(line for line in (proc.stdout + proc.stderr).splitlines()
                              if "mrichain train --stage denoise --method dncnn" in line)
    params = {k: json.loads(v.split("--params ")[1].split(" --seed")[0].strip("'")) for k, v in commands.items()}
    assert params["off"] == cfg["denoise"]["params"]["dncnn"]
    assert params["on"] == {**cfg["denoise"]["params"]["dncnn"], "noise_snr_range": [10, 60],
                            "noise_coils": cfg["acquire"]["n_coils"]}
