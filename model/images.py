"""Image files to uint8 pixels of the network's size and channels (TensorFlow ops).

One decoder for everything that reads image files: the folder-dataset pipeline
(:mod:`model.pipelines`), the check of a folder's files (:mod:`model.image_folder`) and
``embed.py`` (:func:`read_image`). PNG, JPEG, GIF (first frame) and BMP are read by their content, not their
name; an alpha channel is dropped; grey becomes RGB by repeating it, RGB becomes grey by
ITU-R 601 luma (``tf.image.rgb_to_grayscale``).

Resizing keeps or drops the aspect ratio as ``params.resize`` says:

* ``pad`` (default): the whole image, scaled to fit, centred on black bars
  (``tf.image.resize_with_pad``); nothing is cut off;
* ``crop``: the largest centred square, scaled: no bars, the edges of long sides lost;
* ``stretch``: scaled to the square, the aspect ratio not kept.

Scaling is area-averaged when the image's longer side shrinks (no aliasing) and
bilinear otherwise.

Decoding allocates the whole image, whatever the file's size, so :func:`header_size`
first reads the dimensions from the file's header, and images above :data:`MAX_PIXELS`
are refused undecoded. Only regular files are opened (:func:`open_regular`): a FIFO
blocks ``open``, and reading a device such as ``/dev/zero`` never ends.
"""

import errno
import os
import stat
import struct

import tensorflow as tf

from .errors import UserError, printable
from .params import RESIZE_MODES

# What a file may be called to be taken as an image (the suffixes
# keras.utils.image_dataset_from_directory takes), compared case-insensitively.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")

# The most pixels an image may have. Decoding allocates the whole image whatever the
# file's size (the formats allow billions of pixels in a few KB: a 650 KB PNG of 20000 x
# 20000 took 2.7 GB), in each of num_parallel_calls parallel calls. At 50 MP (a 48 MP
# phone photo fits), decoding and resizing one took 0.75 GB (to RGB) to 1.3 GB (to grey)
# beside TensorFlow's own 0.65 GB (measured at 7000 x 7000).
MAX_PIXELS = 50_000_000


class NotRegularFileError(OSError):
    """A FIFO, device or socket, or a link to one: opening a FIFO blocks until something
    writes to it, and reading a device such as ``/dev/zero`` never ends."""



def open_regular(path):
    """The file ``path`` opened for binary reading, if it is a regular file (links followed).

    Raises:
        IsADirectoryError: a folder.
        NotRegularFileError: a FIFO, device or socket.
        OSError: missing or unreadable.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", path)
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(errno.EINVAL, "not a regular file", path)
    return open(path, "rb")


def header_size(file):
    """(width, height, pixels) of the PNG, JPEG, GIF or BMP image in the binary ``file``,
    from its header alone (nothing is decoded).

    ``pixels`` is width x height; for a GIF, the larger of that and the sum of its frames'
    areas (giflib holds every frame in memory, even when only the first one is used).

    Returns:
        None when the data is none of these formats (told by content, as
        ``tf.io.decode_image`` tells them) or its header is cut or damaged.
    """
    start = file.read(26)
    if len(start) >= 24 and start[:8] == b"\x89PNG\r\n\x1a\n" and start[12:16] == b"IHDR":
        width, height = struct.unpack(">II", start[16:24])
    elif start.startswith(b"\xff\xd8\xff"):
        file.seek(2)
        size = _jpeg_size(file)
        if size is None:
            return None
        width, height = size
    elif start.startswith(b"GIF") and len(start) >= 13:  # giflib checks these 3 bytes
        return _gif_size(file, start)
    elif start.startswith(b"BM") and len(start) >= 26:
        # Signed, as the TensorFlow decoder reads them; a negative height is a top-down image.
        width, height = struct.unpack("<ii", start[18:26])
        height = abs(height)
    else:
        return None
    return width, height, width * height


# JPEG markers that carry no length and no segment: TEM, the restart markers RST0-7, and
# 0 (0xFF00 stands for a 0xFF data byte).
_STANDALONE = {0x00, 0x01, *range(0xD0, 0xD8)}
# The start-of-frame markers SOF0-15, which hold the dimensions; 0xC4, 0xC8 and 0xCC in
# that range are DHT, JPG and DAC.
_START_OF_FRAME = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(file):
    """(width, height) from the first start-of-frame segment of the JPEG ``file`` (read
    from after its SOI marker), or None."""
    while _past_next_ff(file):
        marker = file.read(1)
        while marker == b"\xff":  # fill bytes
            marker = file.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _STANDALONE:
            continue
        if code in (0xD9, 0xDA):  # the end of the image, or a scan, before any frame
            return None
        length = file.read(2)
        if len(length) < 2 or struct.unpack(">H", length)[0] < 2:
            return None
        if code in _START_OF_FRAME:
            frame = file.read(5)  # precision, height, width
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:])
            return width, height
        file.seek(struct.unpack(">H", length)[0] - 2, os.SEEK_CUR)  # the length counts itself
    return None


def _past_next_ff(file):
    """Move ``file`` past its next 0xFF byte; False at the end of the file.

    A marker is due here: libjpeg skips stray bytes before one, and so does this.
    """
    while True:
        chunk = file.read(4096)
        if not chunk:
            return False
        found = chunk.find(b"\xff")
        if found >= 0:
            file.seek(found + 1 - len(chunk), os.SEEK_CUR)
            return True


def _gif_size(file, start):
    """(width, height, pixels) of the GIF ``file`` whose first 13 bytes are in ``start``:
    the logical screen, and the larger of its area and the sum of the frames' areas."""
    width, height, flags = struct.unpack("<HHB", start[6:11])
    file.seek(13 + _colour_table_size(flags))
    frame_pixels = 0
    while True:
        block = file.read(1)
        if block == b",":  # an image descriptor: left, top, width, height, flags
            descriptor = file.read(9)
            if len(descriptor) < 9:
                break
            frame_width, frame_height, frame_flags = struct.unpack("<HHB", descriptor[4:])
            frame_pixels += frame_width * frame_height
            file.seek(_colour_table_size(frame_flags) + 1, os.SEEK_CUR)  # + LZW code size
        elif block == b"!":  # an extension: its label, then its data
            file.seek(1, os.SEEK_CUR)
        else:  # the trailer, the end of the file, or damage that the decoder will refuse
            break
        _skip_sub_blocks(file)
    return width, height, max(width * height, frame_pixels)


def _colour_table_size(flags):
    """Bytes of the colour table that a GIF screen or frame descriptor's ``flags`` announce."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(file):
    """Move ``file`` past a chain of GIF data sub-blocks (each a length byte and up to 255
    bytes) and its 0 terminator."""
    while True:
        length = file.read(1)
        if not length or length == b"\0":
            return
        file.seek(length[0], os.SEEK_CUR)


def decode(data, channels):
    """uint8 [H, W, channels] pixels of an encoded PNG, JPEG, GIF or BMP (a string tensor).

    Raises (when run):
        tf.errors.InvalidArgumentError: not an image of these formats, or a damaged one.
    """
    image = tf.io.decode_image(data, expand_animations=False)
    image.set_shape([None, None, None])
    found = tf.shape(image)[-1]
    # Drop an alpha channel (grey + alpha has 2 channels, RGB + alpha 4).
    image = tf.cond(tf.equal(found % 2, 0), lambda: image[..., :found - 1], lambda: image)
    if channels == 3:
        rgb = tf.cond(tf.equal(tf.shape(image)[-1], 1),
                      lambda: tf.tile(image, [1, 1, 3]), lambda: image)
        return tf.ensure_shape(rgb, [None, None, 3])
    grey = tf.cond(tf.equal(tf.shape(image)[-1], 3), lambda: _luma(image), lambda: image)
    return tf.ensure_shape(grey, [None, None, 1])


# ITU-R 601 luma: the weights of tf.image.rgb_to_grayscale, which computes a tensordot.
_LUMA_WEIGHTS = ((0.2989,), (0.5870,), (0.1140,))


def _luma(rgb):
    """uint8 [H, W, 1] grey of uint8 [H, W, 3] pixels, bit for bit rgb_to_grayscale's
    rounded. Computed as its tensordot is (one matmul) but without the tensordot's
    transpose: graph optimisation moves that transpose before the cast, onto the uint8
    pixels, and oneDNN then prints an error line (E0000 ... "oneDNN supports DT_UINT8
    only on platforms with AVX-512") on every class-folder run."""
    pixels = tf.reshape(tf.cast(rgb, tf.float32), [-1, 3])
    luma = tf.matmul(pixels, tf.constant(_LUMA_WEIGHTS, tf.float32))
    luma = tf.reshape(luma, tf.concat([tf.shape(rgb)[:2], [1]], axis=0))
    return tf.cast(tf.round(luma), tf.uint8)


def fit(image, size, mode):
    """uint8 [size, size, C] from uint8 [H, W, C], resized as ``mode`` says (module docstring).

    An image already ``size`` x ``size`` is returned unchanged, bit for bit.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    height, width = tf.shape(image)[0], tf.shape(image)[1]

    def scaled():
        pixels = tf.cast(image, tf.float32)
        if mode == "crop":
            side = tf.minimum(height, width)
            pixels = tf.image.crop_to_bounding_box(pixels, (height - side) // 2,
                                                   (width - side) // 2, side, side)
        shrinking = tf.maximum(tf.shape(pixels)[0], tf.shape(pixels)[1]) > size
        out = tf.cond(shrinking, lambda: _resize(pixels, size, mode, "area"),
                      lambda: _resize(pixels, size, mode, "bilinear"))
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
    out = tf.cond(same, lambda: image, scaled)
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


def _resize(pixels, size, mode, method):
    if mode == "pad":
        return tf.image.resize_with_pad(pixels, size, size, method=method)
    return tf.image.resize(pixels, [size, size], method=method)


def load(path, size, channels, mode):
    """uint8 [size, size, channels] pixels of the image file ``path`` (a string tensor)."""
    return fit(decode(tf.io.read_file(path), channels), size, mode)


def read_image(path, image_size, resize=False, channels=1, mode="pad"):
    """Read a PNG, JPEG, GIF or BMP file as uint8 [image_size, image_size, channels].

    Colour images become grey (ITU-R 601 luma) for a grey network and grey ones RGB for
    a colour network; an alpha channel is dropped (:func:`decode`). Another size
    is an error unless ``resize``; then it is resized as ``mode`` (the run's
    ``params.resize``) says, like the class-folder images the network was trained on.
    MNIST digits are light on a dark background: invert dark-on-light images first.

    Raises:
        UserError: not a readable regular file, not an image of these formats, above
            :data:`MAX_PIXELS`, or of another size without ``resize``.
    """
    name = printable(path)
    try:
        image = decode(_read_checked(path, name), channels)
    except tf.errors.InvalidArgumentError:
        raise UserError(f"{name}: not a PNG, JPEG, GIF or BMP image") from None
    height, width = image.shape[:2]
    if (height, width) != (image_size, image_size):
        if not resize:
            raise UserError(f"{name}: image is {width}x{height}, the model expects "
                            f"{image_size}x{image_size}; resize it or pass --resize")
        image = fit(image, image_size, mode)
    return image.numpy()


def _read_checked(path, name):
    """The bytes of the image file ``path`` (shown as ``name``), once its header shows an
    image of at most :data:`MAX_PIXELS`. Python reads them: it takes any file name, where
    TensorFlow takes only UTF-8 ones."""
    try:
        with open_regular(path) as file:
            size = header_size(file)
            if size is None:
                raise UserError(f"{name}: not a PNG, JPEG, GIF or BMP image")
            width, height, pixels = size
            if pixels > MAX_PIXELS:
                frames = "" if pixels == width * height else f" (frames of {pixels:,} pixels)"
                raise UserError(f"{name}: image is {width}x{height}{frames}, above the limit "
                                f"of {MAX_PIXELS:,} pixels that bounds the memory of decoding "
                                "it; shrink it")
            file.seek(0)
            return file.read()
    except IsADirectoryError:
        raise UserError(f"{name} is a folder, not an image; pass image files (PNG, JPEG, GIF "
                        "or BMP)") from None
    except NotRegularFileError:
        raise UserError(f"{name} is not a regular file (a FIFO, device or socket, or a link "
                        "to one), not an image; pass image files (PNG, JPEG, GIF or "
                        "BMP)") from None
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except OSError as err:
        raise UserError(f"{name}: cannot read it ({err.strerror}); check its "
                        "permissions") from None
