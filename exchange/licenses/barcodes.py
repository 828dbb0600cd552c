"""2D barcodes that carry a device's Digital Link, and reading them back.

A device label carries its Digital Link URI (``exchange.licenses.device_ids``)
as a QR Code or a Data Matrix; scanning it leads to the licence resolver.

* Rendering: QR Code by ``segno`` (error correction level M, 4-module quiet
  zone); Data Matrix ECC 200 by zxing-cpp's writer, always square (labels are
  square; rectangular symbols scan worse when rotated), 1-module quiet zone as
  zint draws it. PNG (greyscale or 1-bit, ``module_px`` pixels per module) or
  SVG (UTF-8 bytes, one module = ``module_px`` user units).
* Reading: zxing-cpp on a raster image (PNG, JPEG, …, or a Pillow image), in
  any orientation, looking for QR Code and Data Matrix only. SVG is not read:
  a scanner sees pixels.
* Batch export: :func:`export_batch` writes one file per device and format,
  named by the device's index in the batch (ids may hold ``/`` and other
  characters unfit for file names), and then ``manifest.csv``; the manifest is
  written last, through a temporary file, so it exists only for a complete export.

Errors: :class:`UnreadableImage` (the bytes are no image) and
:class:`BarcodeNotFound` (no single Digital Link barcode in the image), both
``ValueError``; a barcode whose text is no device link raises
``InvalidDeviceId`` from :func:`decode_device`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import segno
import zxingcpp
from PIL import Image, UnidentifiedImageError

from exchange.licenses.device_ids import DeviceId, digital_link, parse_digital_link

DEFAULT_MODULE_PX: Final = 8
QR_BORDER: Final = 4
"""The QR Code's quiet zone, in modules."""
MANIFEST_NAME: Final = "manifest.csv"
_READ_FORMATS: Final = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.DataMatrix]
)


class UnreadableImage(ValueError):
    """The bytes are not an image Pillow can open."""


class BarcodeNotFound(ValueError):
    """The image holds no QR Code or Data Matrix, or more than one."""


class Symbology(StrEnum):
    QR = "qr"
    DATAMATRIX = "datamatrix"


class ImageType(StrEnum):
    PNG = "png"
    SVG = "svg"


@dataclass(frozen=True, slots=True)
class LabelFormat:
    """One file per device: a symbology drawn as one image type."""

    symbology: Symbology
    image_type: ImageType

    @property
    def column(self) -> str:
        """The manifest column that names these files (``qr_png``)."""
        return f"{self.symbology}_{self.image_type}"

    def file_name(self, index: int, width: int) -> str:
        return f"{index:0{width}d}.{self.symbology}.{self.image_type}"


ALL_FORMATS: Final = tuple(LabelFormat(s, t) for s in Symbology for t in ImageType)


def render(
    uri: str, symbology: Symbology, image_type: ImageType, *, module_px: int = DEFAULT_MODULE_PX
) -> bytes:
    """`uri` drawn as `symbology`: PNG bytes, or SVG as UTF-8 bytes."""
    if module_px < 1:
        raise ValueError(f"module_px must be at least 1, not {module_px}")
    if symbology is Symbology.QR:
        return _render_qr(uri, image_type, module_px)
    return _render_datamatrix(uri, image_type, module_px)


class ImageTooLarge(ValueError):
    """The image would be more pixels a side than the caller allows."""

    def __init__(self, side_px: int, max_side_px: int) -> None:
        super().__init__(f"the image would be {side_px} pixels a side, more than {max_side_px}")
        self.side_px = side_px
        self.max_side_px = max_side_px


def _render_qr(uri: str, image_type: ImageType, module_px: int, max_png_side_px: int | None = None) -> bytes:
    code = segno.make_qr(uri, error="m")
    if max_png_side_px is not None and image_type is ImageType.PNG:
        side = int(code.symbol_size(scale=module_px, border=QR_BORDER)[0])
        if side > max_png_side_px:
            raise ImageTooLarge(side, max_png_side_px)
    buffer = io.BytesIO()
    code.save(buffer, kind=str(image_type), scale=module_px, border=QR_BORDER)
    return buffer.getvalue()


def render_qr(uri: str, image_type: ImageType, *, module_px: int, max_png_side_px: int) -> bytes:
    """`uri` as a QR Code, as :func:`render` draws it, built once; ``ImageTooLarge`` (before any
    drawing) for a PNG more than ``max_png_side_px`` pixels a side. SVG is not limited: its size
    does not grow with ``module_px``."""
    if module_px < 1:
        raise ValueError(f"module_px must be at least 1, not {module_px}")
    return _render_qr(uri, image_type, module_px, max_png_side_px)


def _render_datamatrix(uri: str, image_type: ImageType, module_px: int) -> bytes:
    symbol = zxingcpp.create_barcode(uri, zxingcpp.BarcodeFormat.DataMatrix, forceSquare=True)
    if image_type is ImageType.SVG:
        return zxingcpp.write_barcode_to_svg(symbol, scale=module_px).encode("utf-8")
    image = Image.fromarray(zxingcpp.write_barcode_to_image(symbol, scale=module_px))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode(image: bytes | Image.Image) -> list[str]:
    """The texts of every QR Code and Data Matrix found in a raster image."""
    if isinstance(image, bytes):
        try:
            opened = Image.open(io.BytesIO(image))
            opened.load()
        except (UnidentifiedImageError, OSError):
            what = "an SVG, which is not read here" if _looks_like_svg(image) else "no image format read here"
            raise UnreadableImage(
                f"not a readable raster image ({what}): give a PNG, JPEG, GIF, BMP or TIFF"
            ) from None
        image = opened
    return [barcode.text for barcode in zxingcpp.read_barcodes(image, formats=_READ_FORMATS)]


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return head.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in head


def decode_one(image: bytes | Image.Image) -> str:
    """The text of the one barcode in the image."""
    texts = decode(image)
    if len(texts) != 1:
        raise BarcodeNotFound(f"expected one QR Code or Data Matrix, found {len(texts)}")
    return texts[0]


def decode_device(image: bytes | Image.Image) -> DeviceId:
    """The device whose Digital Link the image's one barcode carries."""
    return parse_digital_link(decode_one(image))


Progress = Callable[[int, int], None]


def export_batch(
    devices: Sequence[DeviceId],
    out_dir: Path,
    *,
    resolver_base: str,
    formats: Sequence[LabelFormat] = ALL_FORMATS,
    progress: Progress | None = None,
    module_px: int = DEFAULT_MODULE_PX,
) -> Path:
    """Write label files for a batch and its manifest; return the manifest's path.

    ``devices[i]`` is device ``i`` of the batch, as in its Merkle tree. The
    manifest has one row per device: ``index, scheme, device_id`` (canonical),
    ``id_hash`` (0x hex), ``uri``, then one column per format naming its file.
    `progress` is called with ``(done, total)`` after each device.
    """
    if not formats or len(set(formats)) != len(formats):
        raise ValueError("formats must be a non-empty list without repeats")
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(devices)
    width = max(6, len(str(max(total - 1, 0))))
    rows: list[list[str]] = []
    for index, device in enumerate(devices):
        uri = digital_link(device, resolver_base)
        names = []
        for label in formats:
            name = label.file_name(index, width)
            (out_dir / name).write_bytes(render(uri, label.symbology, label.image_type, module_px=module_px))
            names.append(name)
        rows.append(
            [str(index), str(device.scheme), device.canonical, "0x" + device.id_hash.hex(), uri, *names]
        )
        if progress is not None:
            progress(index + 1, total)
    manifest = out_dir / MANIFEST_NAME
    partial = out_dir / (MANIFEST_NAME + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["index", "scheme", "device_id", "id_hash", "uri", *(label.column for label in formats)]
        )
        writer.writerows(rows)
    os.replace(partial, manifest)
    return manifest
