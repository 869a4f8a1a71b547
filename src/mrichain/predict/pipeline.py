"""Brain-age prediction over a cohort: features from segmentations, fit on train, predict all."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mrichain.io import load_image, load_json, save_json


def run_prediction(
    method: str,
    params: dict,
    subjects: list[str],
    splits: dict[str, str],
    label_paths: list[str],
    info_paths: list[str],
    out_predictions: str | Path,
    out_model: str | Path,
) -> pd.DataFrame:
    """Fit ``method`` on the train split's segmentations and true ages, predict every subject.

    label_paths / info_paths: one per subject, in the order of ``subjects``; labels are uint8
    maps (0 BG, 1 CSF, 2 GM, 3 WM), info JSONs hold the true ``age`` in years.
    Writes a TSV (subject, split, age, predicted_age[, predicted_lower, predicted_upper]) and the
    fitted model as JSON. Returns the predictions table.
    """
    from mrichain.predict import METHODS
    from mrichain.predict.volumes import tissue_volumes

    if not (len(subjects) == len(label_paths) == len(info_paths)):
        raise ValueError("subjects, label_paths and info_paths must have the same length")
    volumes = [tissue_volumes(load_image(p)) for p in label_paths]
    ages = [float(load_json(p)["age"]) for p in info_paths]
    train = [i for i, s in enumerate(subjects) if splits[s] == "train"]
    model_impl = METHODS[method]
    model = model_impl.fit([volumes[i] for i in train], [ages[i] for i in train], **params)
    predicted = model_impl.predict(model, volumes)
    table = pd.DataFrame(
        {
            "subject": subjects,
            "split": [splits[s] for s in subjects],
            "age": ages,
            "predicted_age": [float(x) for x in predicted],
        }
    )
    for key in ("csf_ml", "gm_ml", "wm_ml", "icv_ml"):
        table[key] = [v[key] for v in volumes]
    Path(out_predictions).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_predictions, sep="\t", index=False, float_format="%.6g")
    save_json({"method": method, "params": params, "n_train": len(train), "model": model}, out_model)
    return table
