"""Figures: each writes a readable PNG under its name and draws what a reader relies on."""

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from facelab import plots
from facelab.data.celeba_names import ATTRIBUTES


def _read_png(path):
    assert path.is_file() and path.stat().st_size > 0
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    return pixels


@pytest.fixture
def history():
    epochs = np.arange(6)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "accuracy": 0.4 + 0.1 * epochs,
            "loss": 1.0 - 0.1 * epochs,
            "lr": 0.005,
            "val_accuracy": 0.35 + 0.1 * epochs,
            "val_loss": 1.1 - 0.1 * epochs,
        }
    )


def _images(n, size=16):
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_plot_history_writes_png_with_loss_and_accuracy_from_epoch_one(tmp_path, history):
    path = tmp_path / "orientation_fromscratch_history.png"
    fig = plots.plot_history(history, path, "orientation_fromscratch")
    _read_png(path)
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation"]
    assert loss_ax.get_lines()[0].get_xdata()[0] == 1  # epochs 1-based
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), history["val_accuracy"])


def test_plot_history_marks_each_phase_start_with_a_vertical_line(tmp_path, history):
    fig = plots.plot_history(history, tmp_path / "h.png", "t", phase_starts=[4])
    for ax in fig.axes:
        verticals = [
            line
            for line in ax.get_lines()
            if len(set(line.get_xdata())) == 1 and line.get_linestyle() == "--"
        ]
        # phase 2 starts at 0-based epoch 4 = the 5th epoch: the line sits between 4 and 5
        assert [line.get_xdata()[0] for line in verticals] == [4.5]
        assert any("phase 2" in text.get_text() for text in ax.texts)


def test_plot_history_tolerates_missing_columns_and_repeated_epochs(tmp_path):
    resumed = pd.DataFrame({"epoch": [0, 1, 1, 2], "loss": [1.0, 0.9, 0.8, 0.7]})
    fig = plots.plot_history(resumed, tmp_path / "h.png", "t")
    (train,) = fig.axes[0].get_lines()
    np.testing.assert_allclose(train.get_ydata(), [1.0, 0.8, 0.7])  # the later epoch-1 row
    assert any("no accuracy" in text.get_text() for text in fig.axes[1].texts)
    _read_png(tmp_path / "h.png")


def test_plot_confusion_shows_counts_in_cells(tmp_path):
    path = tmp_path / "orientation_fromscratch_confusion.png"
    matrix = [[5, 1, 0], [2, 3, 0], [0, 0, 4]]
    fig = plots.plot_confusion(matrix, ["left", "center", "right"], path, "orientation")
    _read_png(path)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["5", "1", "0", "2", "3", "0", "0", "0", "4"]
    fig = plots.plot_confusion(matrix, ["left", "center", "right"], path, "t", normalize=True)
    assert [t.get_text() for t in fig.axes[0].texts][:3] == ["83%", "17%", "0%"]


def test_plot_confusion_rejects_a_matrix_of_the_wrong_size(tmp_path):
    with pytest.raises(ValueError, match="3x3"):
        plots.plot_confusion(np.ones((2, 2)), ["left", "center", "right"], tmp_path / "c.png", "t")


def test_plot_samples_titles_right_green_wrong_red(tmp_path):
    path = tmp_path / "orientation_fromscratch_samples.png"
    fig = plots.plot_samples(
        _images(2), ["left", "right"], ["left", "left"], [0.97, 0.6], path, "orientation"
    )
    _read_png(path)
    right, wrong = (ax.title for ax in fig.axes[:2])
    assert right.get_text() == "true: left / pred: left (97%)"
    assert wrong.get_text() == "true: right / pred: left (60%)"
    r, g, b = to_rgb(wrong.get_color())
    assert r > 0.6 and g < 0.4 and b < 0.4
    r, g, b = to_rgb(right.get_color())
    assert g > 0.5 and r < 0.4


def test_plot_samples_shows_at_most_nine_and_no_colour_without_truth(tmp_path):
    images = _images(12).astype("float32")  # float 0..255, as the input pipeline yields
    fig = plots.plot_samples(images, None, ["left"] * 12, [97.0] * 12, tmp_path / "s.png", "t")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 9
    assert shown[0].title.get_text() == "pred: left (97%)"
    assert to_rgb(shown[0].title.get_color()) == (0.0, 0.0, 0.0)


def test_plot_labelled_samples_one_row_per_class_with_scores(tmp_path):
    path = tmp_path / "light_labels.png"
    images = {"left": list(_images(8)), "center": list(_images(2)), "right": []}
    scores = {"left": [0.1 * i for i in range(8)], "center": [0.0, 0.05]}
    fig = plots.plot_labelled_samples(images, scores, path, "light labels")
    _read_png(path)
    assert len(fig.axes) == 3 * 6
    assert sum(bool(ax.images) for ax in fig.axes) == 6 + 2
    assert fig.axes[1].get_xlabel() == "0.10"
    assert fig.axes[0].get_ylabel().startswith("left")


def test_plot_attribute_bars_draws_a_bar_and_baseline_per_attribute(tmp_path):
    rng = np.random.default_rng(0)
    per_attribute = {
        name: {"accuracy": acc, "majority_baseline": base}
        for name, acc, base in zip(
            ATTRIBUTES, rng.uniform(0.7, 1, 40), rng.uniform(0.5, 1, 40), strict=True
        )
    }
    path = tmp_path / "attributes_mobilenetv2_attributes.png"
    fig = plots.plot_attribute_bars(per_attribute, path, "attributes")
    _read_png(path)
    ax = fig.axes[0]
    assert len(ax.patches) == 40
    assert len(ax.collections[0].get_offsets()) == 40  # the baseline marks
    with pytest.raises(ValueError, match="f2"):
        plots.plot_attribute_bars(per_attribute, path, "attributes", metric="f2")


def test_plot_model_comparison_one_bar_per_stem_latest_row_best_first(tmp_path):
    results = pd.DataFrame(
        {
            "stem": [
                "orientation_fromscratch",
                "orientation_inceptionv3",
                "orientation_fromscratch",
            ],
            "test_accuracy": [0.70, 0.80, 0.90],
        }
    )
    path = tmp_path / "comparison.png"
    fig = plots.plot_model_comparison(results, path, "orientation")
    _read_png(path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "orientation_fromscratch",
        "orientation_inceptionv3",
    ]
    assert [p.get_width() for p in ax.patches] == [0.90, 0.80]


def test_writing_over_an_existing_png_replaces_it_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "gender_resnet50_confusion.png"
    path.write_bytes(b"old")
    plots.plot_confusion([[3, 1], [0, 4]], ["female", "male"], path, "gender")
    assert list(tmp_path.iterdir()) == [path]
    _read_png(path)


def test_figures_stay_out_of_pyplot(tmp_path, history):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_history(history, tmp_path / "h.png", "t")
    assert plt.get_fignums() == before


def test_a_huge_image_is_shrunk_before_it_is_drawn(tmp_path):
    images = np.full((2, 3000, 2000, 3), 200, np.uint8)
    figure = plots.plot_samples(images, ["a", "b"], ["a", "a"], [0.9, 0.6], tmp_path / "s.png", "t")
    shown = [im.get_array().shape for ax in figure.axes for im in ax.get_images()]
    assert shown and all(max(shape[:2]) <= 512 for shape in shown)
