"""Demo data: the real layouts, every class with enough lesions, deterministic for a seed."""

from __future__ import annotations

import pandas as pd

from keras_med.data import HAM10000_CLASSES
from keras_med.data.synthetic import write_ham10000_demo


def test_ham_demo_is_imbalanced_with_enough_lesions_per_class(ham_demo_dir):
    metadata = pd.read_csv(ham_demo_dir / "HAM10000_metadata.csv")
    assert len(metadata) == 140
    lesions = metadata.groupby("dx")["lesion_id"].nunique()
    assert set(lesions.index) == set(HAM10000_CLASSES) and (lesions >= 8).all()
    images = metadata["dx"].value_counts()
    assert images.idxmax() == "nv"
    assert metadata.groupby("lesion_id").size().max() > 1, "some lesions should have several images"


def test_ham_demo_is_deterministic_for_a_seed(tmp_path):
    first = write_ham10000_demo(tmp_path / "a", n_images=112, seed=5, size=(32, 24))
    again = write_ham10000_demo(tmp_path / "b", n_images=112, seed=5, size=(32, 24))
    assert (first / "HAM10000_metadata.csv").read_bytes() == (again / "HAM10000_metadata.csv").read_bytes()
    name = "HAM10000_images_part_1/ISIC_0000010.jpg"
    assert (first / name).read_bytes() == (again / name).read_bytes()
