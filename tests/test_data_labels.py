"""One label rule in every source: case variants are one class (logged), empty/NaN/todo rows are left out and listed."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from keras_med.data import load_chestxray14, load_covid_chestxray, load_ham10000, load_image_folder
from keras_med.data.labels import is_missing_label, merge_case_variants
from keras_med.data.sources.table import load_image_table


def _images(folder, names, image_writer, value=100):
    for name in names:
        image_writer(folder / name, np.full((8, 8, 3), value, np.uint8))


def test_case_variants_merge_to_the_most_frequent_spelling_and_say_so(caplog):
    caplog.set_level(logging.WARNING)
    merged, mapping = merge_case_variants(["MEL"] * 2 + ["mel"] * 3 + [" Mel "] + ["nv"] * 4, "t.csv: labels")
    assert merged == ["mel"] * 6 + ["nv"] * 4
    assert mapping == {"MEL": "mel", "Mel": "mel", "mel": "mel"}
    assert "'MEL' (2 rows) and 'Mel' (1 rows) and 'mel' (3 rows) merged as 'mel'" in caplog.text
    # a tie goes to the spelling that sorts first, whatever the row order
    assert merge_case_variants(["b", "B"])[0] == merge_case_variants(["B", "b"])[0] == ["B", "B"]


@pytest.mark.parametrize("value, missing", [("", True), ("  ", True), ("NaN", True), ("none", True), ("NULL", True),
                                            (None, True), (float("nan"), True), ("nv", False), ("0", False)])
def test_missing_labels(value, missing):
    assert is_missing_label(value) is missing


def test_table_merges_case_and_leaves_out_unlabelled_rows(tmp_path, image_writer, caplog):
    caplog.set_level(logging.WARNING)
    labels = ["MEL", "mel", "mel", "nv", "nv", "NaN", "", "None"]
    names = [f"i{i}.png" for i in range(len(labels))]
    _images(tmp_path / "images", names, image_writer)
    pd.DataFrame({"file": names, "dx": labels}).to_csv(tmp_path / "labels.csv", index=False)

    table = load_image_table(tmp_path / "labels.csv", tmp_path / "images", image_column="file", label_column="dx",
                             report_dir=tmp_path / "run")

    assert table.class_names == ["mel", "nv"] and table.task == "binary"
    assert table.frame["label"].tolist() == ["mel", "mel", "mel", "nv", "nv"]
    assert "'MEL' (1 rows) and 'mel' (2 rows) merged as 'mel'" in caplog.text
    listed = pd.read_csv(tmp_path / "run" / "left_out.csv", keep_default_na=False)
    assert listed["line"].tolist() == [7, 8, 9] and listed["path"].tolist() == names[5:]
    assert listed["reason"].tolist() == ["missing label 'NaN' in column 'dx'", "empty label in column 'dx'",
                                         "missing label 'None' in column 'dx'"]
    assert [row["line"] for row in table.left_out] == [7, 8, 9]
    assert "left out 3 rows without a usable label" in caplog.text


def test_multilabel_table_merges_case_inside_label_sets(tmp_path, image_writer):
    labels = ["Effusion|Mass", "effusion", "Mass", "No Finding", "NaN"]
    names = [f"i{i}.png" for i in range(len(labels))]
    _images(tmp_path / "images", names, image_writer)
    pd.DataFrame({"file": names, "y": labels}).to_csv(tmp_path / "labels.csv", index=False)
    table = load_image_table(tmp_path / "labels.csv", tmp_path / "images", image_column="file", label_column="y",
                             label_separator="|")
    assert table.class_names == ["Effusion", "Mass"]
    assert table.frame["label"].tolist() == ["Effusion|Mass", "Effusion", "Mass", ""]
    assert len(table.left_out) == 1


def test_ham10000_reads_upper_case_dx_and_leaves_out_blank_dx(tmp_path, image_writer, caplog):
    caplog.set_level(logging.WARNING)
    ids = [f"ISIC_{i:07d}" for i in range(5)]
    _images(tmp_path / "images", [f"{name}.jpg" for name in ids], image_writer)
    pd.DataFrame({"lesion_id": [f"L{i}" for i in range(5)], "image_id": ids,
                  "dx": ["MEL", "mel", "nv", "NaN", ""]}).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    table = load_ham10000(tmp_path, report_dir=tmp_path / "run")
    assert table.frame["label"].tolist() == ["mel", "mel", "nv"]
    assert "merged as 'mel'" in caplog.text
    assert pd.read_csv(tmp_path / "run" / "left_out.csv")["line"].tolist() == [5, 6]


def test_chestxray14_merges_case_of_pathologies(tmp_path, image_writer):
    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    _images(tmp_path / "images", names, image_writer)
    pd.DataFrame({"Image Index": names, "Finding Labels": ["Effusion", "EFFUSION|Mass", "no finding", "", "Effusion"],
                  "Patient ID": ["1", "2", "3", "4", "5"]}).to_csv(tmp_path / "data.csv", index=False)
    table = load_chestxray14(tmp_path / "data.csv", tmp_path / "images")
    assert table.class_names == ["Effusion", "Mass"]
    assert table.frame["label"].tolist() == ["Effusion", "Effusion|Mass", "", "Effusion"]
    assert len(table.left_out) == 1


def test_covid_todo_findings_are_left_out_not_negatives(tmp_path, image_writer):
    findings = ["Pneumonia/Viral/COVID-19", "No Finding", "todo", "Pneumonia/Bacterial", "TODO", ""]
    names = [f"p{i}.jpg" for i in range(len(findings))]
    _images(tmp_path / "images", names, image_writer)
    pd.DataFrame({"patientid": [str(i) for i in range(len(names))], "finding": findings,
                  "view": "PA", "modality": "X-ray", "folder": "images", "filename": names}) \
        .to_csv(tmp_path / "metadata.csv", index=False)
    table = load_covid_chestxray(tmp_path, report_dir=tmp_path / "run")
    assert table.frame["filename"].tolist() == ["p0.jpg", "p1.jpg", "p3.jpg"]
    assert table.frame["label"].tolist() == ["COVID-19", "other", "other"]
    listed = pd.read_csv(tmp_path / "run" / "left_out.csv", keep_default_na=False)
    assert listed["path"].tolist() == ["p2.jpg", "p4.jpg", "p5.jpg"]
    assert listed["reason"].str.startswith("finding 'todo': not yet labelled").sum() == 2


def test_image_folder_class_folders_differing_in_case_are_one_class(tmp_path, image_writer, caplog):
    caplog.set_level(logging.WARNING)
    _images(tmp_path / "MEL", ["a.png"], image_writer)
    _images(tmp_path / "mel", ["b.png", "c.png"], image_writer)
    _images(tmp_path / "nv", ["d.png"], image_writer)
    table = load_image_folder(tmp_path)
    assert table.class_names == ["mel", "nv"] and table.task == "binary"
    assert sorted(table.frame["label"]) == ["mel", "mel", "mel", "nv"]
    assert "'MEL' (1 rows) and 'mel' (2 rows) merged as 'mel'" in caplog.text


def test_external_test_set_leaves_out_rows_without_a_label(tmp_path, image_writer):
    from keras_med.data import load_external_test

    names = ["a.png", "b.png", "c.png"]
    _images(tmp_path / "images", names, image_writer)
    pd.DataFrame({"image": names, "label": ["MEL", "NaN", "nv"]}).to_csv(tmp_path / "ext.csv", index=False)
    table = load_external_test(tmp_path / "ext.csv", tmp_path / "images", ["mel", "nv"], task="binary")
    assert table.frame["label"].tolist() == ["mel", "nv"]
    assert [row["line"] for row in table.left_out] == [3]
