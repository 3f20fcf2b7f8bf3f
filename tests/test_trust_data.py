"""Issue 22, bounded inputs: hostile image, IDX, landmark, text and weights files, dataset options and input specs
give one line (exit code != 0 at the command line) before anything large is allocated, never a traceback, a
warning or a hang; errors quote no bytes of the file."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from repreval.api import InputSpec
from repreval.cli import main
from repreval.config import Subset
from repreval.data import fit_to_input, subset_indices
from repreval.errors import ReprevalError
from repreval.landmarks import landmarks_for, read_landmark_file
from repreval.models import read_checkpoint
from repreval_builtins.datasets import read_idx

GRAY8 = InputSpec(1, 8, 8)
LONG_NAME = "w" * 300 + ".pt"


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks (a FIFO opened, a link loop walked) fails after 15 s instead of hanging the suite."""

    def hung(*_):
        raise TimeoutError("hung for 15 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(15)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def create(plugins):
    return lambda name, **options: plugins.dataset.create(name, options)


def one_line(error: ReprevalError | str) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(10))) + chunk(b"IEND", b"")
    )


def save_png(path: Path, size: tuple[int, int] = (6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 200).save(path)
    return path


# -- images ------------------------------------------------------------------------------------


def test_an_image_header_claiming_400_megapixels_is_refused_before_decoding(create, tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header(20000, 20000))  # was a DecompressionBombError traceback
    dataset = create("image_files", paths=str(tmp_path / "*.png"))
    with pytest.raises(ReprevalError, match="claims more than 64,000,000 pixels") as caught:
        dataset.load([0], GRAY8)
    assert "bomb.png" in one_line(caught.value)


def test_damaged_images_are_one_line_without_warnings_or_quoted_bytes(create, tmp_path):
    Image.new("RGB", (40, 40)).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    (tmp_path / "passwd.png").write_bytes(b"toor:x:0:0:toor:/toor:/bin/bash\n")
    for name, problem in (("cut.jpg", "Truncated"), ("passwd.png", "not an image file PIL can read")):
        dataset = create("image_files", paths=str(tmp_path / name))
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with pytest.raises(ReprevalError, match=problem) as caught:
                dataset.load([0], GRAY8)
        assert not shown and "BufferedReader" not in one_line(caught.value) and "toor:" not in str(caught.value)


def test_an_image_resize_that_would_take_gigabytes_is_refused(tmp_path):
    strip = torch.zeros(1, 1, 3000)  # resized to a shorter side of 192: 192 × 576,000 pixels
    with pytest.raises(ReprevalError, match="would take 110,592,000 pixels"):
        fit_to_input([strip], InputSpec(1, 96, 96, crop_pct=0.5))


# -- folders, globs and special files -------------------------------------------------------------


def test_image_folder_with_symlink_loops_and_a_fifo_lists_each_image_once(create, tmp_path):
    save_png(tmp_path / "data" / "cls" / "a.png")
    os.symlink("..", tmp_path / "data" / "cls" / "up")  # two loops: os.walk(followlinks=True) never ended
    os.symlink(".", tmp_path / "data" / "cls" / "here")
    os.mkfifo(tmp_path / "data" / "cls" / "pipe.png")  # opening it blocked forever
    dataset = create("image_folder", path=str(tmp_path / "data"))
    assert dataset.files == [str(tmp_path / "data" / "cls" / "a.png")]
    assert dataset.load([0], GRAY8).images.shape == (1, 3, 6, 6)


def test_special_files_named_as_images_are_refused_or_skipped_never_waited_on(create, tmp_path):
    save_png(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    assert [path.name for path in create("image_files", paths=str(tmp_path / "*.png")).files] == ["a.png"]
    with pytest.raises(ReprevalError, match="not a regular file") as caught:
        create("image_files", paths=str(tmp_path / "pipe.png"))
    one_line(caught.value)
    os.mkfifo(tmp_path / "texts.txt")
    with pytest.raises(ReprevalError, match="not a regular file"):
        create("text_lines", path=str(tmp_path / "texts.txt"))


def test_a_glob_over_the_whole_disk_is_refused_in_one_line(create):
    with pytest.raises(ReprevalError, match="searches more than 10,000 folders") as caught:
        create("image_files", paths="/**/*.png")
    one_line(caught.value)


def test_the_bounded_glob_finds_what_glob_finds(create, tmp_path):
    for relative in ("a/x_1.png", "a/b/y_2.png", "a/.hidden/z_3.png", "c/w_4.jpg", "c/notes.txt"):
        save_png(tmp_path / relative) if relative.endswith((".png", ".jpg")) else (tmp_path / relative).touch()
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    found = create("image_files", paths=str(tmp_path / "**" / "*.png")).files
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["a/b/y_2.png", "a/x_1.png"]
    assert len(create("image_files", paths=[str(tmp_path / "*/*_?.*")]).files) == 2


@pytest.mark.parametrize("name", ["img_99999999999999999999.png", "img_².png"])
def test_a_label_in_a_file_name_is_a_small_ascii_integer(create, tmp_path, name):
    save_png(tmp_path / name)
    with pytest.raises(ReprevalError, match="is not an integer below") as caught:
        create("image_files", paths=str(tmp_path / "*.png"), label_from_name=True).load([0], GRAY8)
    one_line(caught.value)


@pytest.mark.parametrize("kind, option", [("image_folder", "path"), ("mnist", "path"), ("text_lines", "path")])
def test_an_over_long_path_is_one_line(create, kind, option):
    with pytest.raises(ReprevalError, match="cannot be looked up \\(File name too long\\)") as caught:
        create(kind, **{option: "d" * 300})  # was an OSError: 'the plugin failed to start'
    assert "failed to start" not in one_line(caught.value)


# -- IDX -------------------------------------------------------------------------------------------


def idx(path: Path, type_code: int, shape: tuple[int, ...], data: bytes = b"", compress: bool = False) -> Path:
    raw = bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)
    return path


@pytest.mark.parametrize(
    "shape, data, problem",
    [
        ((1,) * 255, b"\x07", "announces 255 dimensions"),  # numpy's reshape raised ValueError
        ((65536,) * 4, b"", "more than the 1,073,741,824 read"),  # the int64 product wrapped to 0
        ((3,), b"\x01\x02", "needs 11 bytes, the file has 10"),
    ],
)
def test_idx_headers_are_checked_in_python_integers(tmp_path, shape, data, problem):
    with pytest.raises(ReprevalError, match=problem) as caught:
        read_idx(idx(tmp_path / "x-images-idx3-ubyte", 0x08, shape, data))
    one_line(caught.value)


def test_a_bad_idx_magic_number_is_not_quoted(tmp_path):
    (tmp_path / "passwd").write_bytes(b"toor:x:0:0:toor:/toor:/bin/bash\n")
    with pytest.raises(ReprevalError, match="not a valid IDX file: bad magic number") as caught:
        read_idx(tmp_path / "passwd")
    assert b"toor".hex() not in one_line(caught.value) and "toor:" not in str(caught.value)


def test_a_gzip_idx_bomb_is_not_inflated(tmp_path):
    bomb = idx(tmp_path / "t-images-idx3-ubyte.gz", 0x08, (100,), bytes(150_000_000), compress=True)
    assert bomb.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ReprevalError, match="needs 108 bytes, the file has more"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # the whole file inflated took 150 MB


def test_mnist_reads_a_gzip_file_within_its_header(create, tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    idx(tmp_path / "t-images-idx3-ubyte.gz", 0x08, images.shape, images.tobytes(), compress=True)
    idx(tmp_path / "t-labels-idx1-ubyte", 0x08, (2,), b"\x01\x00")
    data = create("mnist", path=str(tmp_path)).load([1, 0], InputSpec(1, 3, 4))
    assert data.labels.tolist() == [0, 1] and torch.equal(data.images[1, 0], torch.from_numpy(images[0]) / 255)


# -- counts, seeds, input specs ----------------------------------------------------------------------


def test_noise_count_and_dataset_sizes_are_bounded_before_allocation(create):
    with pytest.raises(ReprevalError, match="'count' must be at most 10,000,000"):
        create("noise", count=10**12)  # its permutation took 8 TB
    with pytest.raises(ReprevalError, match="more than the 100,000,000 a subset is drawn from"):
        subset_indices(Subset(limit=1), 10**12)
    with pytest.raises(ReprevalError, match="seed 18446744073709551616 is out of range"):
        subset_indices(Subset(seed=2**64), 10)  # was torch's ValueError


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"crop_pct": "0.9"}, "crop_pct must be a number from 0.25 to 2.0"),
        ({"crop_pct": -1}, "crop_pct must be a number"),
        ({"crop_pct": [0.9]}, "crop_pct must be a number"),
        ({"crop_pct": 0.0001}, "crop_pct must be a number"),  # resized a 32-pixel image to 320,000: 102 GB
        ({"crop_pct": float("nan")}, "crop_pct must be a number"),
        ({"interpolation": "lanczos"}, "interpolation must be one of bilinear, bicubic, nearest"),
        ({"interpolation": ["bilinear"]}, "interpolation must be one of"),
        ({"height": 100_000, "width": 100_000}, "size must be at most 67,108,864 values"),
        ({"height": -3}, "height must be an integer, 1 or more"),
        ({"channels": 2.5}, "channels must be an integer"),
        ({"mean": (0.5, 0.5)}, "mean must be 1 or 3 finite numbers"),
        ({"std": (0.0,)}, "std must be 1 or 3 finite positive numbers"),
    ],
)
def test_input_specs_are_checked_where_they_are_made(changes, problem):
    with pytest.raises(ReprevalError, match=problem) as caught:
        InputSpec(**{"channels": 3, "height": 32, "width": 32, **changes})
    one_line(caught.value)


def test_validate_refuses_a_torch_model_with_a_bad_crop_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    evaluation = {"dataset": "d", "saliency": ["gradients"], "scores": ["noise_score"]}
    model = {"model": "torch:torch.nn:Flatten", "options": {"input_size": [1, 8, 8], "crop_pct": "abc"}}
    suite = {"name": "crop", "datasets": {"d": {"kind": "digits", "limit": 2}}, "models": {"m": model},
             "variants": ["random"], "evaluation": evaluation}  # fmt: skip
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    code = main(["validate", "suite.yaml"])
    output = capsys.readouterr()
    assert code != 0 and "crop_pct must be a number from 0.25 to 2.0, or none, got 'abc'" in output.err
    assert "Traceback" not in output.out + output.err


# -- landmark files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),  # was a RecursionError
        ("huge.json", json.dumps([{"image": 0, "name": "a", "x": 1, "y": 2}])[:-2] + "9" * 5000 + "}]", "digits"),
        ("index.csv", "image,name,x,y\n" + "9" * 5000 + ",a,1,2\n", "is not an ASCII number below 1,000,000,000"),
        ("bool.json", json.dumps([{"image": True, "name": "a", "x": 1, "y": 2}]), "image and name must be text"),
        ("inf.csv", "image,name,x,y\n0,a,1e999,2\n", "x and y must be finite numbers"),
        ("names.csv", "image,name,x,y\n" + "".join(f"0,n{i},1,2\n" for i in range(1001)), "names 1,001 landmarks"),
        ("binary.csv", b"\xff\xfe\x00", "not UTF-8 text"),
    ],
)
def test_hostile_landmark_files_are_one_line(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ReprevalError, match=problem) as caught:
        landmarks_for(read_landmark_file(path), [0], None)
    one_line(caught.value)


def test_a_unicode_digit_is_a_file_name_not_an_index(tmp_path):
    (tmp_path / "points.csv").write_text("image,name,x,y\n²,a,1,2\n")  # '²'.isdigit() but int('²') raised
    with pytest.raises(ReprevalError, match="no landmark row names an image of the dataset"):
        landmarks_for(read_landmark_file(tmp_path / "points.csv"), [0], None)


def test_landmark_files_that_are_fifos_or_too_long_are_one_line(tmp_path):
    os.mkfifo(tmp_path / "points.csv")
    for path, problem in ((tmp_path / "points.csv", "is a FIFO"), (tmp_path / ("p" * 300), "File name too long")):
        with pytest.raises(ReprevalError, match=problem) as caught:
            read_landmark_file(path)
        one_line(caught.value)


# -- weights files -----------------------------------------------------------------------------------


def test_an_over_long_weights_path_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReprevalError, match="cannot be looked up \\(File name too long\\)") as caught:
        read_checkpoint(LONG_NAME)  # was OSError ENAMETOOLONG
    assert len(one_line(caught.value)) < 300


def test_a_bad_checkpoint_is_one_line_without_torch_warnings(tmp_path):
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))  # torch warned about the protocol
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(ReprevalError, match="not a readable checkpoint") as caught:
            read_checkpoint(tmp_path / "plain.pt")
    assert not shown, [str(w.message) for w in shown]
    one_line(caught.value)
