"""VoxelMorph's recipe: activations alive from the input to the flow head, a known shift learned
in a few steps, the semi-supervised Dice term on the train split's labels."""
import json

import numpy as np
import pytest
import torch

from mrichain.io import save_image
from mrichain.scoring.metrics import dice
from mrichain.register import voxelmorph as vxm
from mrichain.train import seed_everything

N = 24  # phantom grid (voxels); the default backbone pads it to 32 and runs at 16^3
SHIFT = 2.0  # voxels along axis 0: moving(x + SHIFT e0) = fixed(x), so the learned u[0] is +SHIFT


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _phantom(shift: float = 0.0):
    """Labels (0 background, 1 WM core + rim, 2 GM shell, 3 CSF-like ring) and an image whose
    intensity is a function of the label, as tensors [1, 1, N, N, N], centre shifted by ``shift``
    voxels along axis 0."""
    g = np.stack(np.meshgrid(*[np.arange(N, dtype=np.float64)] * 3, indexing="ij"))
    c = (N - 1) / 2 + np.array([shift, 0.0, 0.0])[:, None, None, None]
    r = np.sqrt((((g - c) / np.array([1.0, 1.15, 0.95])[:, None, None, None]) ** 2).sum(0))
    lab = np.zeros((N,) * 3, np.int64)
    lab[r < 9.5] = 1
    lab[r < 8.5] = 2
    lab[r < 6.0] = 3
    lab[r < 2.5] = 1
    img = np.choose(lab, [0.0, 0.3, 0.6, 1.0]).astype(np.float32)
    return torch.from_numpy(img)[None, None], torch.from_numpy(lab)[None, None]


def _train_steps(net, loss_fn, batch, steps: int, lr: float) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(net, batch, torch.device("cpu")).backward()
        opt.step()


def _registration(net, moving, moving_labels, fixed_labels):
    """(mean u[0] over the fixed brain, mean Dice of the warped labels, identity Dice)."""
    with torch.no_grad():
        _, ddf, _ = net(moving, FIXED[0])
        warped = vxm.warp_labels(net, moving_labels, ddf)[0, 0].numpy()
    ref = fixed_labels[0, 0].numpy()
    brain = torch.from_numpy(ref > 0)
    mean_dice = lambda a: float(np.mean(list(dice(a, ref).values())))  # noqa: E731
    return float(ddf[0, 0][brain].mean()), mean_dice(warped), mean_dice(moving_labels[0, 0].numpy())


FIXED = _phantom()
MOVING = _phantom(SHIFT)


def test_activations_stay_alive_at_init():
    """At init the flow head's input keeps the SD of the image pair (PyTorch's default init without
    normalisation: 0.06 of it, on a 2 mm brain pair and here); the untrained warp is the identity."""
    seed_everything(0)
    net = vxm.build_model(vxm.DEFAULT_HYPER)
    sds = vxm.activation_sds(net, MOVING[0], FIXED[0])
    assert len(sds) == 10  # 3 down + bottom + 3 up convs, 2 final convs, the flow head
    assert sds[-1][0].endswith("final_conv_out.conv")
    ratios = [sd / sds[0][1] for _, sd in sds]
    assert min(ratios) > 0.5, [f"{n}: {r:.3f}" for (n, _), r in zip(sds, ratios)]
    _, ddf, _ = net(MOVING[0], FIXED[0])
    assert float(ddf.abs().max()) < 1e-2
    assert isinstance(net.flow_head, torch.nn.Conv3d) and net.flow_head.out_channels == 3
    assert float(net.flow_head.weight.std()) < 1e-4  # VoxelMorph's Normal(0, 1e-5) flow init
    # without instance norm the Kaiming init alone keeps the head's input alive too
    seed_everything(0)
    plain = vxm.build_model({**vxm.DEFAULT_HYPER, "norm": None})
    plain_sds = vxm.activation_sds(plain, MOVING[0], FIXED[0])
    assert plain_sds[-1][1] / plain_sds[0][1] > 0.3
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules()) == 9  # all but the head


def test_a_known_shift_is_learned_in_a_few_steps():
    """Ten Adam steps at 1e-3 on one pair shifted by 2 voxels: the mean displacement reaches most
    of the shift, in its direction, and the warped labels overlap far better than unregistered
    (the collapsed backbone moved 0.26 voxel and gained 0.007 Dice in the same steps)."""
    seed_everything(0)
    net = vxm.build_model(vxm.DEFAULT_HYPER)
    u0_start, _, identity = _registration(net, MOVING[0], MOVING[1], FIXED[1])
    batch = {"moving": MOVING[0], "fixed": FIXED[0], "labels": MOVING[1], "fixed_labels": FIXED[1]}
    _train_steps(net, vxm.RegistrationLoss(0.5, 5), batch, steps=10, lr=1e-3)
    u0, registered, _ = _registration(net, MOVING[0], MOVING[1], FIXED[1])
    assert abs(u0_start) < 1e-2
    assert 0.6 * SHIFT < u0 < 1.5 * SHIFT
    assert identity < 0.6 and registered > identity + 0.25


def test_the_dice_term_moves_the_flow_when_labels_are_present():
    """A moving image with no contrast gives NCC nothing to align: only the Dice term of the
    warped labels can move the flow, and it does, towards the labels' shift."""
    blank = torch.full_like(MOVING[0], 0.5)
    labelled = {"moving": blank, "fixed": FIXED[0], "labels": MOVING[1], "fixed_labels": FIXED[1]}
    unlabelled = {"moving": blank, "fixed": FIXED[0]}
    loss_fn = vxm.RegistrationLoss(0.5, 5, lambda_dice=1.0)
    seed_everything(0)
    net = vxm.build_model(vxm.DEFAULT_HYPER)
    with torch.no_grad():  # the term is there exactly when the batch carries labels
        gap = float(loss_fn(net, labelled, torch.device("cpu")) - loss_fn(net, unlabelled, torch.device("cpu")))
    _, _, identity = _registration(net, blank, MOVING[1], FIXED[1])
    assert gap == pytest.approx(1.0 - identity, abs=0.05)  # soft Dice loss of the unregistered labels
    _train_steps(net, loss_fn, labelled, steps=10, lr=1e-3)
    u0, registered, _ = _registration(net, blank, MOVING[1], FIXED[1])
    assert u0 > 0.3 * SHIFT and registered > identity + 0.1
    seed_everything(0)
    ncc_only = vxm.build_model(vxm.DEFAULT_HYPER)
    _train_steps(ncc_only, loss_fn, unlabelled, steps=10, lr=1e-3)
    assert abs(_registration(ncc_only, blank, MOVING[1], FIXED[1])[0]) < 0.1 * SHIFT


def test_train_uses_the_train_labels_by_default(tmp_path):
    """The default recipe is semi-supervised (VoxelMorph's Dice weight 0.01): the train items'
    labels reach the loss, the card says how many."""
    assert vxm.DEFAULT_HYPER["lambda_dice"] == 0.01 and vxm.DEFAULT_HYPER["norm"] == "instance"
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = {}
    for name, (img, lab) in {"tpl": FIXED, "m0": MOVING, "m1": _phantom(-1.0), "m2": _phantom(1.0)}.items():
        save_image(img[0, 0].numpy(), aff, tmp_path / f"{name}_T1w.nii.gz")
        save_image(lab[0, 0].numpy().astype(np.uint8), aff, tmp_path / f"{name}_dseg.nii.gz", dtype=np.uint8)
        paths[name] = {"moving": str(tmp_path / f"{name}_T1w.nii.gz"), "labels": str(tmp_path / f"{name}_dseg.nii.gz")}
    manifest = {"fixed": paths["tpl"]["moving"], "fixed_labels": paths["tpl"]["labels"],
                "train": [paths["m0"], paths["m1"]], "val": [paths["m2"]]}
    params = {"epochs": 1, "max_batches_per_epoch": 1, "channels": [4, 8, 8, 8], "final_conv_channels": [8], "int_steps": 4, "ncc_kernel": 5}
    vxm.train(manifest, params, str(tmp_path / "sup" / "register-voxelmorph.pt"), 0, progress=False)
    vxm.train(manifest, {**params, "lambda_dice": 0.0}, str(tmp_path / "unsup" / "register-voxelmorph.pt"), 0,
              progress=False)
    sup = json.loads((tmp_path / "sup" / "register-voxelmorph.json").read_text())
    unsup = json.loads((tmp_path / "unsup" / "register-voxelmorph.json").read_text())
    assert sup["n_train_labelled"] == 2 and unsup["n_train_labelled"] == 0
    assert sup["hyper_parameters"]["lambda_dice"] == 0.01 and sup["hyper_parameters"]["norm"] == "instance"
    curve = lambda d: [line.split("\t") for line in (tmp_path / d / "register-voxelmorph_curve.tsv").read_text().splitlines()]  # noqa: E731
    loss_col = curve("sup")[0].index("train_loss")
    # one step from the same weights on the same item: the supervised loss carries the Dice term on top
    assert float(curve("sup")[-1][loss_col]) > float(curve("unsup")[-1][loss_col])
