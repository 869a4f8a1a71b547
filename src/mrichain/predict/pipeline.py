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
    info_paths: list[str],
    out_predictions: str | Path,
    out_model: str | Path,
    label_paths: list[str] | None = None,
    image_paths: list[str] | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """Predict every subject's brain age; write a TSV and a JSON describing the model.

    A volume method (``METHODS``, e.g. linear) is fitted here on the train split's segmentations
    (``label_paths``: uint8 maps 0 BG, 1 CSF, 2 GM, 3 WM) and true ages. A learned method
    (``LEARNED_METHODS``: the image CNN reads ``image_paths``, the tissue MLP ``label_paths``) was
    trained by its own job and reads its weights ``model``; the CNN also returns a predictive interval.
    info_paths: one per subject (order of ``subjects``), JSONs holding the true ``age`` in years
    (null for a real subject of unknown age; such subjects must not be in the train split).
    TSV columns: subject, split, age, predicted_age[, predicted_lower, predicted_upper, volumes].
    """
    from mrichain.predict import LEARNED_METHODS, METHODS
    from mrichain.predict.volumes import tissue_volumes
    from mrichain.plan.stages import method as declared

    # a real subject's age may be unknown (null: no participants.tsv age); it is predicted, not fitted on
    ages = [float("nan") if (a := load_json(p)["age"]) is None else float(a) for p in info_paths]
    if method in LEARNED_METHODS:
        paths = image_paths if "images" in (declared("predict", method).reads or {}) else label_paths
        if paths is None or model is None or len(paths) != len(subjects):
            raise ValueError(f"{method} needs one input per subject and its trained model")
        pred = LEARNED_METHODS[method](model, paths, **params)
        table = pd.DataFrame({"subject": subjects, "split": [splits[s] for s in subjects], "age": ages})
        table = pd.concat([table, pred.reset_index(drop=True)], axis=1)
        Path(out_predictions).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_predictions, sep="\t", index=False, float_format="%.6g")
        save_json({"method": method, "params": params, "weights": str(model),
                   "card": load_json(Path(model).with_suffix(".json"))}, out_model)
        return table
    if label_paths is None:  # a method reading no features (the mean floor)
        volumes = [{} for _ in subjects]
    elif len(label_paths) != len(subjects):
        raise ValueError(f"{method} needs one segmentation per subject, got {len(label_paths)} for {len(subjects)}")
    else:
        volumes = [tissue_volumes(load_image(p)) for p in label_paths]
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
    for key in sorted(volumes[0]) if volumes else []:
        table[key] = [v[key] for v in volumes]
    Path(out_predictions).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_predictions, sep="\t", index=False, float_format="%.6g")
    save_json({"method": method, "params": params, "n_train": len(train), "model": model}, out_model)
    return table
