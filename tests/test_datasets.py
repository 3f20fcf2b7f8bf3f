"""Built-in datasets (plugin ``repreval_builtins.datasets``) on real data, plus subsets and fitting in repreval.data."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared
from PIL import Image

import repreval_builtins.datasets.files
from repreval.api import InputSpec
from repreval.config import Subset
from repreval.data import fit_to_input, load_images, subset_indices
from repreval.errors import ReprevalError
from repreval_builtins.datasets import read_idx

MNIST = SHARED / "mnist"
CIFAR = SHARED / "cifar10-test"
FOOLBOX = SHARED / "foolbox-samples"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FOOLBOX_IMAGENET_LABELS = [
    243,
    559,
    438,
    990,
    949,
    853,
    609,
    609,
    915,
    455,
    541,
    630,
    741,
    471,
    129,
    99,
    251,
    22,
    317,
    305,
]
RGB32 = InputSpec(3, 32, 32)


@pytest.fixture
def create(plugins):
    return lambda name, **options: plugins.dataset.create(name, options)


def load_all(dataset, target=RGB32):
    return dataset.load(range(dataset.size(target)), target)


def write_idx(path: Path, array: np.ndarray, type_code: int) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_every_dataset_is_registered_by_the_datasets_plugin(plugins):
    assert plugins.dataset.names() == ["digits", "image_files", "image_folder", "mnist", "noise", "text_lines"]
    assert {entry.plugin for entry in plugins.dataset} == {"datasets"}


def test_unknown_option_is_a_clear_error(create):
    with pytest.raises(ReprevalError, match="bad options for dataset 'digits'"):
        create("digits", path="somewhere")


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_are_sklearn_digits_scaled_to_unit_range(create):
    digits = create("digits")
    data = load_all(digits)
    assert digits.size(RGB32) == 1797
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == torch.float32
    assert data.images.min() == 0.0 and data.images.max() == 1.0
    assert data.labels.dtype == torch.long
    assert data.labels.bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert data.class_names == tuple("0123456789")


def test_loading_preserves_the_order_of_indices(create):
    digits = create("digits")
    everything = load_all(digits)
    picked = digits.load([1500, 3, 700], RGB32)
    assert torch.equal(picked.images, everything.images[[1500, 3, 700]])
    assert picked.labels.tolist() == everything.labels[[1500, 3, 700]].tolist()


def test_out_of_range_index_is_refused(create):
    with pytest.raises(IndexError):
        create("digits").load([-1], RGB32)


# ---------------------------------------------------------------------------------------------
# mnist and IDX files


@needs_shared
def test_mnist_test_set_has_the_published_class_counts(create):
    data = load_all(create("mnist", path=MNIST))
    assert data.images.shape == (10_000, 1, 28, 28)
    assert data.images.min() >= 0.0 and data.images.max() == 1.0
    assert data.labels.bincount().tolist() == MNIST_CLASS_COUNTS


@needs_shared
def test_mnist_matches_foolbox_png_copies_of_its_first_test_images(create):
    mnist = create("mnist", path=MNIST, images="t10k-images-idx3-ubyte.gz", labels="t10k-labels-idx1-ubyte.gz")
    pngs = create("image_files", paths=str(FOOLBOX / "mnist_*.png"), grayscale=True, label_from_name=True)
    from_idx, from_png = mnist.load(range(20), RGB32), load_all(pngs)
    assert torch.equal(from_idx.images, from_png.images)
    assert from_idx.labels.tolist() == from_png.labels.tolist()


@needs_shared
def test_read_idx_tells_gzip_from_plain_by_content(tmp_path):
    plain = tmp_path / "labels.bin"
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as packed, plain.open("wb") as out:
        shutil.copyfileobj(packed, out)
    assert np.array_equal(read_idx(plain), read_idx(MNIST / "t10k-labels-idx1-ubyte.gz"))


def test_read_idx_reads_big_endian_types(tmp_path):
    values = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    write_idx(tmp_path / "values.idx", values, type_code=0x0B)
    read = read_idx(tmp_path / "values.idx")
    assert read.dtype == np.int16 and np.array_equal(read, values)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"this is not an IDX file", "bad magic number"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(100), "needs 1584 bytes"),
        (b"\x1f\x8b" + b"not really gzip", "cannot read IDX file"),
        (b"", "empty file"),
    ],
)
def test_corrupt_idx_file_is_an_error_naming_the_file(create, tmp_path, content, problem):
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(content)
    mnist = create("mnist", path=tmp_path)
    with pytest.raises(ReprevalError, match=problem) as caught:
        mnist.size(RGB32)
    assert str(images) in str(caught.value)


def test_mnist_refuses_labels_that_do_not_match_the_images(create, tmp_path):
    write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), type_code=0x08)
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(3, np.uint8), type_code=0x08)
    with pytest.raises(ReprevalError, match="not 4 integer labels"):
        create("mnist", path=tmp_path).size(RGB32)


def test_mnist_without_labels_file_loads_unlabelled_images(create, tmp_path):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 15
    write_idx(tmp_path / "x-images-idx3-ubyte", pixels, type_code=0x08)
    data = create("mnist", path=tmp_path).load([1], RGB32)
    assert data.labels is None
    assert torch.allclose(data.images[0, 0], torch.from_numpy(pixels[1]).float() / 255)


def test_mnist_directory_with_two_image_files_asks_which(create, tmp_path):
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8), type_code=0x08)
    with pytest.raises(ReprevalError, match="several images files"):
        create("mnist", path=tmp_path)


# ---------------------------------------------------------------------------------------------
# image_folder


@needs_shared
def test_image_folder_decodes_only_the_requested_images(create, monkeypatch):
    cifar = create("image_folder", path=CIFAR)
    assert cifar.size(RGB32) == 10_000
    assert cifar.describe() == f"image_folder {CIFAR} (10,000 images, 10 classes)"

    decoded = []
    read_image = repreval_builtins.datasets.files.read_image

    def counting_read_image(path, *args):
        decoded.append(path)
        return read_image(path, *args)

    monkeypatch.setattr(repreval_builtins.datasets.files, "read_image", counting_read_image)
    data = cifar.load([9999, 0, 4321, 1000, 5555], RGB32)

    assert data.class_names == CIFAR_CLASSES
    assert data.labels.tolist() == [9, 0, 4, 1, 5]
    assert [Path(path).parent.name for path in decoded] == [CIFAR_CLASSES[label] for label in data.labels]
    assert [Path(path).name for path in decoded] == ["0999.jpg", "0000.jpg", "0321.jpg", "0000.jpg", "0555.jpg"]
    assert data.images.shape == (5, 3, 32, 32) and data.images.dtype == torch.float32
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0


@needs_shared
def test_image_folder_grayscale_gives_one_channel(create):
    data = create("image_folder", path=CIFAR, grayscale=True).load([7], RGB32)
    assert data.images.shape == (1, 1, 32, 32)


def test_image_folder_layout_rules(create, tmp_path):
    def save(relative: str, value: int):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3), (value, value, value)).save(tmp_path / relative)

    save("b_class/2.PNG", 20)
    save("b_class/1.png", 10)
    save("b_class/nested/3.bmp", 30)
    save("a_class/x.jpg", 255)
    save(".hidden/y.png", 0)
    (tmp_path / "a_class" / "notes.txt").write_text("not an image")

    dataset = create("image_folder", path=tmp_path)
    data = load_all(dataset)
    assert data.class_names == ("a_class", "b_class")
    assert data.labels.tolist() == [0, 1, 1, 1]
    assert data.images.shape == (4, 3, 3, 4)
    assert [round(float(image.mean()) * 255) for image in data.images[1:]] == [10, 20, 30]


@pytest.mark.parametrize(
    "prepare, problem",
    [
        (lambda root: None, "has no class sub-folders"),
        (lambda root: (root / "cat").mkdir(), "holds no images"),
        (lambda root: (root / "file.txt").write_text("x"), "has no class sub-folders"),
    ],
)
def test_image_folder_without_images_is_an_error(create, tmp_path, prepare, problem):
    prepare(tmp_path)
    with pytest.raises(ReprevalError, match=problem):
        create("image_folder", path=tmp_path)


def test_unreadable_image_is_an_error_naming_the_file(create, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ReprevalError, match="broken.jpg"):
        create("image_folder", path=tmp_path).load([0], RGB32)


@pytest.mark.parametrize(
    "name, options",
    [
        ("image_folder", {"path": "/nonexistent/images"}),
        ("mnist", {"path": "/nonexistent/mnist"}),
        ("mnist", {}),
        ("image_files", {"paths": "/nonexistent/photo.jpg"}),
        ("image_files", {"paths": "/nonexistent/*.jpg"}),
    ],
)
def test_missing_path_is_a_clear_error(create, name, options):
    with pytest.raises(ReprevalError) as caught:
        create(name, **options)
    assert caught.value.fix


def test_path_that_is_a_file_is_refused_as_folder(create, tmp_path):
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ReprevalError, match="is a file, not a directory"):
        create("image_folder", path=tmp_path / "file.png")


# ---------------------------------------------------------------------------------------------
# image_files


@needs_shared
def test_image_files_glob_with_labels_from_names(create):
    dataset = create("image_files", paths=str(FOOLBOX / "imagenet_*.jpg"), label_from_name=True)
    data = load_all(dataset)
    assert len(data) == 20
    assert data.labels.tolist() == FOOLBOX_IMAGENET_LABELS
    assert isinstance(data.images, list)  # sizes differ (one is 1024×683)
    assert all(image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1 for image in data.images)
    assert fit_to_input(data.images, InputSpec(3, 224, 224, crop_pct=0.875)).shape == (20, 3, 224, 224)


@needs_shared
def test_image_files_keeps_the_order_given_and_drops_duplicates(create):
    first, second = FOOLBOX / "cifar10_05_6.png", FOOLBOX / "cifar10_00_3.png"
    dataset = create("image_files", paths=[first, str(second), str(FOOLBOX / "cifar10_0[0-2]_*.png")])
    assert dataset.files == [first, second, FOOLBOX / "cifar10_01_8.png", FOOLBOX / "cifar10_02_8.png"]
    data = dataset.load([1, 0], RGB32)
    assert data.labels is None and data.images.shape == (2, 3, 32, 32)


def test_image_files_label_that_is_not_a_number_is_an_error(create, tmp_path):
    Image.new("L", (2, 2)).save(tmp_path / "photo_cat.png")
    with pytest.raises(ReprevalError, match="'cat' is not an integer"):
        create("image_files", paths=tmp_path / "photo_cat.png", label_from_name=True)


@pytest.mark.parametrize("paths", [5, [], None])
def test_image_files_rejects_paths_of_the_wrong_type(create, paths):
    with pytest.raises(ReprevalError, match="bad options"):
        create("image_files", paths=paths)


# ---------------------------------------------------------------------------------------------
# noise


def test_noise_is_seeded_per_image(create):
    spec = InputSpec(3, 16, 12)
    noise = create("noise", count=10, seed=1)
    everything = load_all(noise, spec).images
    assert noise.size(spec) == 10 and everything.shape == (10, *spec.shape)
    assert everything.min() >= 0.0 and everything.max() < 1.0
    assert torch.equal(everything, create("noise", count=10, seed=1).load(range(10), spec).images)
    assert torch.equal(noise.load([7, 2], spec).images, everything[[7, 2]])
    assert not torch.equal(create("noise", count=10, seed=2).load([7], spec).images[0], everything[7])
    assert not torch.equal(everything[0], everything[1])
    assert noise.load([0], spec).labels is None


@pytest.mark.parametrize("options", [{"count": 0}, {"count": "64"}, {"seed": 1.5}, {"count": True}])
def test_noise_rejects_bad_options(create, options):
    with pytest.raises(ReprevalError):
        create("noise", **options)


# ---------------------------------------------------------------------------------------------
# repreval.data: subsets and fitting


def test_subset_is_deterministic_and_disjoint_across_skip_ranges():
    first = subset_indices(Subset(limit=100, skip=0, seed=3), 1797)
    assert first == subset_indices(Subset(limit=100, skip=0, seed=3), 1797)
    assert first != subset_indices(Subset(limit=100, skip=0, seed=4), 1797)
    second = subset_indices(Subset(limit=100, skip=100, seed=3), 1797)
    assert len(first) == len(second) == 100
    assert not set(first) & set(second)
    assert len(subset_indices(Subset(skip=1790, seed=3), 1797)) == 7
    with pytest.raises(ReprevalError, match="skip"):
        subset_indices(Subset(skip=1797), 1797)


@needs_shared
def test_load_images_fits_cifar_to_a_one_channel_28x28_input(create):
    cifar = create("image_folder", path=CIFAR)
    subset = Subset(limit=6, seed=0)
    data = load_images(cifar, subset, InputSpec(1, 28, 28))
    assert data.images.shape == (6, 1, 28, 28)
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    expected = [cifar.labels[i] for i in subset_indices(subset, 10_000)]
    assert data.labels.tolist() == expected and data.class_names == CIFAR_CLASSES
