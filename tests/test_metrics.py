import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrichain.scoring import metrics


@pytest.fixture
def vols():
    rng = np.random.default_rng(0)
    gt = rng.random((4, 32, 40)).astype(np.float32)
    pred = gt + 0.05 * rng.standard_normal(gt.shape).astype(np.float32)
    return gt, pred


def test_ssim_matches_fastmri_definition(vols):
    gt, pred = vols
    expected = np.mean([structural_similarity(gt[s], pred[s], data_range=gt.max()) for s in range(gt.shape[0])])
    assert metrics.ssim(gt, pred) == pytest.approx(expected, rel=1e-6)
    assert metrics.ssim(gt, gt) == pytest.approx(1.0)


def test_psnr_nmse_known_answers():
    gt = np.zeros((2, 8, 8))
    gt[:, :4] = 2.0
    pred = gt + 0.1
    # mse = 0.01, maxval = 2 -> 10*log10(4/0.01)
    assert metrics.psnr(gt, pred) == pytest.approx(10 * np.log10(4 / 0.01))
    assert metrics.psnr(gt, pred, maxval=1.0) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0))
    # ||0.1||^2 * 128 / (4 * 64)
    assert metrics.nmse(gt, pred) == pytest.approx(0.01 * 128 / (4 * 64))
    assert metrics.nmse(gt, gt) == 0.0


def test_dice_identical_and_disjoint():
    a = np.zeros((10, 10, 10), np.uint8)
    a[2:5] = 1
    a[5:8] = 2
    a[8:] = 3
    assert metrics.dice(a, a) == {1: 1.0, 2: 1.0, 3: 1.0}
    b = np.zeros_like(a)
    b[a == 1] = 2
    b[a == 2] = 3
    b[a == 3] = 1
    assert metrics.dice(a, b) == {1: 0.0, 2: 0.0, 3: 0.0}


def test_hd95_identical_and_shift():
    a = np.zeros((30, 30, 30), np.uint8)
    a[8:20, 8:20, 8:20] = 1
    assert metrics.hd95(a, a, labels=(1,))[1] == 0.0
    b = np.roll(a, 3, axis=0)
    assert metrics.hd95(a, b, labels=(1,))[1] == pytest.approx(3.0, abs=0.5)
    assert metrics.hd95(a, b, labels=(1,), spacing=(2.0, 1.0, 1.0))[1] == pytest.approx(6.0, abs=1.0)
    assert np.isnan(metrics.hd95(a, b, labels=(2,))[2])


def test_folding_mae_coverage():
    jac = np.ones((4, 4, 4))
    jac[0, 0, :2] = -0.5
    jac[0, 1, 0] = 0.0
    assert metrics.folding_percent(jac) == pytest.approx(100 * 3 / 64)
    mask = np.zeros_like(jac)
    mask[1:] = 1
    assert metrics.folding_percent(jac, mask) == 0.0
    assert metrics.mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert metrics.interval_coverage([1, 2, 3, 4], [0, 2.5, 2, 5], [1, 3, 4, 6]) == pytest.approx(0.5)


def test_dice_of_a_missing_label_is_zero_not_nan():
    import numpy as np

    from mrichain.scoring.metrics import dice

    a = np.zeros((6, 6, 6), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    b = np.zeros_like(a)
    assert dice(a, b, labels=(1,))[1] == 0.0 and dice(b, a, labels=(1,))[1] == 0.0
    assert np.isnan(dice(b, b, labels=(1,))[1])


def test_metric_table_gives_direction_units_and_table_names():
    from mrichain.scoring.metrics import TABLE_NAMES, higher_is_better, metric

    assert higher_is_better("dice_csf") is True and higher_is_better("t1w_dice_mean") is True
    assert higher_is_better("t1_mape_pure") is False and higher_is_better("seconds_per_pair") is False
    assert higher_is_better("interval_width_years") is False and higher_is_better("interval_coverage") is None
    assert higher_is_better("snr_measured") is None and higher_is_better("unknown_score") is None
    assert metric("psnr").unit == "dB" and metric("hd95_wm").unit == "mm"
    assert metric("t1w_dice_mean").name == "t1w_dice"  # the longest family wins, not "t1"
    assert TABLE_NAMES == {"abs_error_years": "mae_years", "in_interval": "interval_coverage"}
