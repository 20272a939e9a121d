"""Decoding and resizing image files (model/images.py)."""

import io
import os
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO
from model import images
from model.errors import UserError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def encoded(array, fmt):
    """The bytes of ``array`` (uint8 [H, W] or [H, W, C]) saved by Pillow as ``fmt``."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def luma(rgb):
    """ITU-R 601 luma, rounded: the reference for colour-to-grey."""
    weights = np.array([0.2989, 0.5870, 0.1140])
    return np.round(rgb.astype(np.float64) @ weights).astype(np.uint8)[..., None]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF"])
def test_lossless_formats_decode_to_their_pixels_in_both_channel_counts(fmt):
    grey = RGB[..., 0]
    data = encoded(grey, fmt)
    np.testing.assert_array_equal(images.decode(data, 1).numpy(), grey[..., None])
    np.testing.assert_array_equal(images.decode(data, 3).numpy(), np.repeat(grey[..., None], 3, 2))
    if fmt != "GIF":  # GIF stores a palette of at most 256 colours
        colour = encoded(RGB, fmt)
        np.testing.assert_array_equal(images.decode(colour, 3).numpy(), RGB)
        np.testing.assert_allclose(images.decode(colour, 1).numpy(), luma(RGB), atol=1)


def test_colour_to_grey_is_tensorflows_luma_rounded_without_a_onednn_error_line(tmp_path):
    """Bit for bit tf.image.rgb_to_grayscale rounded (what runs trained before were fed),
    eagerly and in a tf.data map, where graph optimisation used to move a transpose onto
    the uint8 pixels and oneDNN printed an E0000 line on every class-folder run."""
    rgb = np.random.default_rng(0).integers(0, 256, (512, 256, 3), dtype=np.uint8)
    expected = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))),
                       tf.uint8).numpy()
    data = encoded(rgb, "PNG")
    np.testing.assert_array_equal(images.decode(data, 1).numpy(), expected)
    mapped = tf.data.Dataset.from_tensors(data).map(lambda d: images.decode(d, 1))
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), expected)
    path = tmp_path / "colour.png"
    path.write_bytes(data)
    code = ("import tensorflow as tf; from model import images; ds = tf.data.Dataset.from_tensors("
            f"{str(path)!r}).map(lambda p: images.decode(tf.io.read_file(p), 1)); list(ds)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "oneDNN supports DT_UINT8" not in result.stderr


def test_alpha_is_dropped():
    rgba = np.concatenate([RGB, np.full(RGB.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(images.decode(encoded(rgba, "PNG"), 3).numpy(), RGB)
    grey_alpha = np.stack([RGB[..., 0], RGB[..., 1]], axis=2)
    np.testing.assert_array_equal(images.decode(encoded(grey_alpha, "PNG"), 1).numpy(),
                                  RGB[..., :1])


def test_jpeg_decodes_close_to_its_pixels():
    smooth = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (12, 1))
    decoded = images.decode(encoded(np.stack([smooth] * 3, axis=2), "JPEG"), 3).numpy()
    assert np.abs(decoded.astype(int) - smooth[..., None]).max() <= 8


def test_damaged_or_foreign_data_fails():
    png = encoded(RGB, "JPEG")
    for data in (png[:len(png) // 2], b"not an image", b""):
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            images.decode(data, 3)


def test_an_image_of_the_size_is_returned_unchanged():
    square = tf.constant(RGB[:12, :12])
    for mode in images.RESIZE_MODES:
        np.testing.assert_array_equal(images.fit(square, 12, mode).numpy(), RGB[:12, :12])


def test_pad_keeps_the_aspect_with_black_bars():
    wide = np.full((10, 40, 1), 200, np.uint8)
    out = images.fit(tf.constant(wide), 20, "pad").numpy()
    assert out.shape == (20, 20, 1)
    np.testing.assert_array_equal(out[:7], 0)
    np.testing.assert_array_equal(out[8:12], 200)
    np.testing.assert_array_equal(out[13:], 0)


def test_crop_takes_the_centred_square():
    wide = np.zeros((10, 30, 1), np.uint8)
    wide[:, 10:20] = 255  # the centred 10 x 10 square
    np.testing.assert_array_equal(images.fit(tf.constant(wide), 10, "crop").numpy(), 255)
    np.testing.assert_array_equal(images.fit(tf.constant(wide), 5, "crop").numpy(), 255)


def test_stretch_fills_the_square_and_shrinking_averages():
    checker = (np.indices((8, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None]
    out = images.fit(tf.constant(checker), 4, "stretch").numpy()
    # Area averaging of a fine checkerboard gives grey, not aliased black or white.
    np.testing.assert_allclose(out, 128, atol=1)


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encoded(RGB, "PNG"))
    out = images.load(str(path), 8, 3, "stretch").numpy()
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="pad, crop, stretch"):
        images.fit(tf.constant(RGB), 8, "fill")


def write_png(path, array):
    tf.io.write_file(str(path), tf.io.encode_png(array))
    return str(path)


def test_read_image_conversions_and_errors(tmp_path):
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    np.testing.assert_array_equal(images.read_image(write_png(tmp_path / "g.png", gray), 28), gray)
    rgba = np.concatenate([np.repeat(gray, 3, axis=2), np.full_like(gray, 7)], axis=2)
    np.testing.assert_array_equal(images.read_image(write_png(tmp_path / "c.png", rgba), 28), gray)
    # For a colour network: grey is repeated, the alpha channel dropped.
    np.testing.assert_array_equal(images.read_image(str(tmp_path / "g.png"), 28, channels=3),
                                  np.repeat(gray, 3, axis=2))
    np.testing.assert_array_equal(images.read_image(str(tmp_path / "c.png"), 28, channels=3),
                                  rgba[..., :3])
    big = np.full((56, 56, 1), 200, np.uint8)
    with pytest.raises(UserError, match="56x56, the model expects 28x28"):
        images.read_image(write_png(tmp_path / "big.png", big), 28)
    np.testing.assert_array_equal(
        images.read_image(str(tmp_path / "big.png"), 28, resize=True), np.full((28, 28, 1), 200))
    # A wide image padded (the default) keeps its aspect with black bars above and below.
    wide = np.full((28, 56, 1), 200, np.uint8)
    padded = images.read_image(write_png(tmp_path / "wide.png", wide), 28, resize=True)
    np.testing.assert_array_equal(padded[7:21], 200)
    np.testing.assert_array_equal(padded[:7], 0)
    np.testing.assert_array_equal(padded[21:], 0)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="not a PNG"):
        images.read_image(str(tmp_path / "text.png"), 28)
    with pytest.raises(UserError, match="no such file"):
        images.read_image(str(tmp_path / "missing.png"), 28)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
@pytest.mark.parametrize("shape", [(12, 20), (33, 7, 3)])
def test_the_header_gives_width_height_and_pixels(fmt, shape):
    pixels = np.zeros(shape, np.uint8)
    assert images.header_size(io.BytesIO(encoded(pixels, fmt))) == (shape[1], shape[0],
                                                                     shape[0] * shape[1])


def test_a_jpeg_header_is_found_after_other_segments_and_in_progressive_files():
    pixels = Image.fromarray(np.zeros((9, 31, 3), np.uint8))
    exif = Image.Exif()
    exif[0x010E] = "x" * 5000  # ImageDescription: an APP1 segment of 5 KB before the frame
    buffer = io.BytesIO()
    pixels.save(buffer, format="JPEG", progressive=True, exif=exif.tobytes())
    data = buffer.getvalue()
    assert b"\xff\xc2" in data  # SOF2: progressive
    assert images.header_size(io.BytesIO(data)) == (31, 9, 279)
    # Stray bytes and fill bytes before a marker (here after the 20 bytes of SOI and JFIF)
    # are skipped, as libjpeg does.
    patched = data[:20] + b"\x00\x00\xff" + data[20:]
    assert images.header_size(io.BytesIO(patched)) == (31, 9, 279)
    assert images.decode(patched, 3).shape == (9, 31, 3)


def test_a_bmp_stored_top_down_has_a_positive_height():
    data = bytearray(encoded(np.zeros((5, 8), np.uint8), "BMP"))
    data[22:26] = struct.pack("<i", -5)
    assert images.header_size(io.BytesIO(bytes(data))) == (8, 5, 40)


def test_every_gif_frame_counts_towards_the_pixels():
    # giflib holds every frame in memory, even when only the first is used.
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)) for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert images.header_size(io.BytesIO(buffer.getvalue())) == (12, 10, 360)


@pytest.mark.parametrize("data", [
    b"", b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00", b"GIF89a\x01", b"BM\x00",
    b"\xff\xd8\xff\xe0\x00\x10JFIF",  # cut before the frame header
    b"\xff\xd8\xff\xda\x00\x02",  # a scan before any frame header
    b"\xff\xd8\xff\xe0\x00\x01",  # a segment length below 2
])
def test_a_foreign_or_damaged_header_gives_none(data):
    assert images.header_size(io.BytesIO(data)) is None


def blank_png(path, width, height):
    """Write a valid grey PNG of ``width`` x ``height`` black pixels, small on disk: zlib
    packs the rows of zeros about 1000:1 (20000 x 20000 pixels in 400 KB, written in 2 s)."""

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # the filter byte (0: none), then the pixels
    rows = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return str(path)


# The address space of a bounded child: far above what a check takes (TensorFlow and the
# decoding of small images: about 0.7 GB), far below what the failures it guards
# against took (4.7 GB reading /dev/zero).
CHILD_MEMORY = 4 << 30


# The last line of a run_bounded program: its peak resident memory in KiB since it started
# (VmHWM; getrusage's ru_maxrss also counts the parent's memory, which a fork before the
# exec shares: 1.7 GB for a child of the whole test suite).
PRINT_PEAK = ("print(next(int(line.split()[1]) for line in open('/proc/self/status') "
              "if line.startswith('VmHWM:')))\n")


def run_bounded(code, *args, timeout=120):
    """Run the Python ``code`` (with ``args`` as sys.argv[1:]) in a child process of capped
    memory, so that a regression (an endless read, a huge decode) fails the test instead
    of hanging it or exhausting the machine. The child's last output line should be its
    peak resident memory in KiB (``PRINT_PEAK``).

    Returns:
        (subprocess.CompletedProcess, the child's peak RSS in bytes).
    """
    cap = ("import resource\n"
           f"resource.setrlimit(resource.RLIMIT_AS, ({CHILD_MEMORY}, {CHILD_MEMORY}))\n")
    done = subprocess.run([sys.executable, "-c", cap + code, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, int(done.stdout.split()[-1]) * 1024


def call_unless_blocked_on(fifo, function, *args):
    """``function(*args)``, failing the test when it is still blocked on opening the FIFO
    ``fifo`` after 60 s (then opening the FIFO for writing lets it go on, to end the thread)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as err:  # handed to the test's thread
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        # A reader blocked in open() goes on once a writer opens; the writer's close
        # then gives it an empty file.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(60)
        pytest.fail(f"blocked opening the FIFO {fifo}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_read_image_refuses_a_fifo_without_opening_it(tmp_path):
    fifo = str(tmp_path / "x.png")
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="x.png is not a regular file") as info:
        call_unless_blocked_on(fifo, images.read_image, fifo, 28)
    assert "\n" not in str(info.value)


@pytest.mark.e2e
def test_read_image_refuses_device_links_and_huge_images_in_bounded_memory(tmp_path):
    os.symlink("/dev/zero", tmp_path / "zero.png")
    blank_png(tmp_path / "huge.png", 20000, 20000)
    code = """
import resource, sys
from model.errors import UserError
from model.images import read_image
for path in sys.argv[1:]:
    try:
        read_image(path, 28, resize=True)
    except UserError as err:
        print(err)
""" + PRINT_PEAK
    done, peak = run_bounded(code, tmp_path / "zero.png", tmp_path / "huge.png")
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'zero.png'} is not a regular file")
    assert lines[1] == (f"{tmp_path / 'huge.png'}: image is 20000x20000, above the limit of "
                        "50,000,000 pixels that bounds the memory of decoding it; shrink it")
    assert peak < 1.5e9


def test_read_image_accepts_a_name_that_is_not_utf8(tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(path, "wb") as f:
        f.write(tf.io.encode_png(np.full((28, 28, 1), 9, np.uint8)).numpy())
    np.testing.assert_array_equal(images.read_image(os.fsdecode(path), 28), 9)


def test_read_image_names_unreadable_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match="not a PNG"):
        images.read_image(str(tmp_path / "x.png"), 28)
    with pytest.raises(UserError, match="is a folder"):
        images.read_image(str(tmp_path), 28)
    with pytest.raises(UserError, match=r"x.png/y.png: cannot read it \(Not a directory\)"):
        images.read_image(str(tmp_path / "x.png" / "y.png"), 28)
