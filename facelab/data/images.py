"""Reading one image from disk into an RGB uint8 array, whatever its format, or a clear reason why not."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# Extensions a folder scan treats as images (compared lower-case). Files with other names are
# still taken when their first bytes say they are an image (e.g. `photo.jpg_1088Wx1632H`).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff", ".webp"}
)
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"P5", b"P6", b"P2", b"P3", b"II*\x00", b"MM\x00*")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def looks_like_image(path: str | os.PathLike) -> bool:
    """True for a file whose extension or first bytes say it is an image."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def list_images(root: str | os.PathLike) -> list[str]:
    """Absolute paths of every image file under ``root`` (recursive, hidden files and folders
    skipped), sorted for determinism. Plain strings: a 200,000-image folder stays small."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; pass a folder that holds images")
    found = []
    for folder, subfolders, files in os.walk(root.resolve()):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [
            path
            for name in files
            if not name.startswith(".") and looks_like_image(path := os.path.join(folder, name))
        ]
    return sorted(found)


def decode_image(
    data: bytes | np.ndarray, path: str | os.PathLike = "<bytes>", size: int | None = None
) -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 (H, W, 3), resized to ``size`` (``resize_image``)
    when given: grey, 16-bit, alpha, CMYK and EXIF handled."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray) else data
    if buf.size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    # IMREAD_COLOR applies the EXIF orientation and converts grey, CMYK and 16-bit to BGR8.
    png = buf[:4].tobytes() == b"\x89PNG"
    image = _decode_png(buf) if png else cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(path, "not a readable image (corrupt, truncated or another file type)")
    if min(image.shape[:2]) < 2:
        raise ImageReadError(path, f"image too small ({image.shape[1]}x{image.shape[0]} pixels)")
    if size is not None:
        image = resize_image(image, size)  # before the BGR -> RGB swap: less to swap
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_png(buf: np.ndarray) -> np.ndarray | None:
    """A PNG as BGR uint8, like cv2.imdecode with IMREAD_COLOR, but with 16-bit scaled down
    and transparency composited on white."""
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:  # composite on white: transparent backgrounds are usually meant light
        bgr = image[..., :3].astype(np.float32)
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = (bgr * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return image


def read_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), resized to ``size`` when given; raise
    ImageReadError naming the file if it cannot."""
    try:
        with open(path, "rb") as file:  # unlike cv2.imread, fine with any characters in the name
            data = file.read()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as err:
        raise ImageReadError(path, f"cannot open ({err.strerror})") from None
    return decode_image(data, path, size)


def shrink_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` with its longer side at most ``max_side`` px (area averaging); smaller as it is."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` (square side, or (height, width)) with area interpolation when shrinking."""
    height, width = (size, size) if isinstance(size, int) else size
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
