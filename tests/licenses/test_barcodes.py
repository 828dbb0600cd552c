"""Barcodes through the real decoder: PNG and rendered SVG, scaled and rotated, and batch export."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import resvg_py
from PIL import Image

from exchange.licenses.barcodes import (
    ALL_FORMATS,
    MANIFEST_NAME,
    BarcodeNotFound,
    ImageTooLarge,
    ImageType,
    LabelFormat,
    Symbology,
    UnreadableImage,
    decode,
    decode_device,
    decode_one,
    export_batch,
    render,
    render_qr,
)
from exchange.licenses.device_ids import (
    MAX_INPUT_LENGTH,
    NAMESPACE_MAX_LENGTH,
    RESOLVER_BASE_MAX_LENGTH,
    SERIAL_MAX_LENGTH,
    DeviceId,
    InvalidDeviceId,
    SerialDeviceId,
    digital_link,
    parse_device_id,
)

RESOLVER = "https://id.example.org"
DEVICES = [
    parse_device_id("gs1", "(01)09506000134352(21)ABC/12:3%x"),
    parse_device_id("gs1", "(01)036000291452(21)" + "Zz9!\"%&'()*+,-./:;<"),
    parse_device_id("imei", "49-015420-323751-8"),
    parse_device_id("serial", "com.acme.phones:SN-000123_a~b"),
]


def rasterise_svg(svg: bytes) -> Image.Image:
    """What a printer makes of the SVG: rendered by resvg onto white."""
    png = resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), background="white")
    return Image.open(io.BytesIO(png)).convert("L")


def png_image(uri: str, symbology: Symbology, module_px: int = 8) -> Image.Image:
    return Image.open(io.BytesIO(render(uri, symbology, ImageType.PNG, module_px=module_px))).convert("L")


@pytest.mark.parametrize("symbology", list(Symbology))
@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.canonical)
def test_png_and_svg_round_trip(symbology: Symbology, device: DeviceId) -> None:
    uri = digital_link(device, RESOLVER)
    png = render(uri, symbology, ImageType.PNG)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert decode(png) == [uri]
    assert decode_device(png) == device
    svg = render(uri, symbology, ImageType.SVG)
    assert svg.lstrip().startswith(b"<?xml")
    assert decode_one(rasterise_svg(svg)) == uri


@pytest.mark.parametrize("symbology", list(Symbology))
def test_datamatrix_is_square_and_module_size_scales_the_image(symbology: Symbology) -> None:
    uri = digital_link(DEVICES[0], RESOLVER)
    small, large = png_image(uri, symbology, module_px=2), png_image(uri, symbology, module_px=6)
    assert small.width == small.height
    assert large.size == (small.width * 3, small.height * 3)


@pytest.mark.parametrize("symbology", list(Symbology))
@pytest.mark.parametrize("factor", [0.45, 0.7, 1.3, 2.5])
@pytest.mark.parametrize("resample", [Image.Resampling.NEAREST, Image.Resampling.BILINEAR])
def test_scaled_images_decode(symbology: Symbology, factor: float, resample: Image.Resampling) -> None:
    uri = digital_link(DEVICES[1], RESOLVER)
    image = png_image(uri, symbology)
    scaled = image.resize((round(image.width * factor), round(image.height * factor)), resample)
    assert decode(scaled) == [uri]


@pytest.mark.parametrize("symbology", list(Symbology))
@pytest.mark.parametrize("angle", [90, 180, 270, 7, 33, -45, 160])
def test_rotated_images_decode(symbology: Symbology, angle: int) -> None:
    uri = digital_link(DEVICES[3], RESOLVER)
    image = png_image(uri, symbology, module_px=6)
    rotated = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)
    assert decode(rotated) == [uri]


@pytest.mark.parametrize("symbology", list(Symbology))
def test_a_label_photographed_on_a_page_decodes(symbology: Symbology) -> None:
    """Rotated, shrunk, placed off-centre on a grey page and saved as JPEG."""
    uri = digital_link(DEVICES[2], RESOLVER)
    label = png_image(uri, symbology).rotate(
        21, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    label = label.resize((label.width * 2 // 3, label.height * 2 // 3), Image.Resampling.BILINEAR)
    page = Image.new("L", (label.width * 3, label.height * 2), 200)
    page.paste(label, (label.width // 2, label.height // 3))
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=70)
    assert decode_device(buffer.getvalue()) == DEVICES[2]


def test_two_labels_in_one_image() -> None:
    uris = [digital_link(device, RESOLVER) for device in DEVICES[2:]]
    left, right = png_image(uris[0], Symbology.QR), png_image(uris[1], Symbology.DATAMATRIX)
    sheet = Image.new("L", (left.width + right.width + 40, max(left.height, right.height)), 255)
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + 40, 0))
    assert sorted(decode(sheet)) == sorted(uris)
    with pytest.raises(BarcodeNotFound, match="found 2"):
        decode_one(sheet)


def test_unreadable_and_empty_images() -> None:
    with pytest.raises(UnreadableImage):
        decode(b"not an image")
    with pytest.raises(UnreadableImage):
        decode(render(RESOLVER + "/imei/490154203237518", Symbology.QR, ImageType.SVG))
    blank = Image.new("L", (200, 200), 255)
    assert decode(blank) == []
    with pytest.raises(BarcodeNotFound, match="found 0"):
        decode_one(blank)


def test_a_barcode_that_is_not_a_device_link() -> None:
    png = render("https://example.org/hello", Symbology.QR, ImageType.PNG)
    assert decode_one(png) == "https://example.org/hello"
    with pytest.raises(InvalidDeviceId):
        decode_device(png)


def test_module_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="module_px"):
        render(RESOLVER, Symbology.QR, ImageType.PNG, module_px=0)


def test_export_batch_writes_files_and_manifest(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    out_dir = tmp_path / "labels"
    manifest = export_batch(
        DEVICES, out_dir, resolver_base=RESOLVER, progress=lambda done, total: calls.append((done, total))
    )
    assert manifest == out_dir / MANIFEST_NAME
    assert calls == [(n, len(DEVICES)) for n in range(1, len(DEVICES) + 1)]
    with manifest.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = ["qr_png", "qr_svg", "datamatrix_png", "datamatrix_svg"]
    assert list(rows[0]) == ["index", "scheme", "device_id", "id_hash", "uri", *columns]
    assert [row["index"] for row in rows] == ["0", "1", "2", "3"]
    for row, device in zip(rows, DEVICES, strict=True):
        uri = digital_link(device, RESOLVER)
        assert (row["scheme"], row["device_id"], row["id_hash"], row["uri"]) == (
            str(device.scheme),
            device.canonical,
            "0x" + device.id_hash.hex(),
            uri,
        )
        assert row["qr_png"] == f"{int(row['index']):06d}.qr.png"
        for column in columns:
            content = (out_dir / row[column]).read_bytes()
            image = rasterise_svg(content) if column.endswith("svg") else content
            assert decode_one(image) == uri, column
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [MANIFEST_NAME, *(r[c] for r in rows for c in columns)]
    )


def test_export_batch_with_chosen_formats(tmp_path: Path) -> None:
    formats = [LabelFormat(Symbology.DATAMATRIX, ImageType.PNG)]
    manifest = export_batch(DEVICES[:2], tmp_path, resolver_base=RESOLVER, formats=formats)
    header = manifest.read_text(encoding="utf-8").splitlines()[0]
    assert header == "index,scheme,device_id,id_hash,uri,datamatrix_png"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "000000.datamatrix.png",
        "000001.datamatrix.png",
        MANIFEST_NAME,
    ]


def test_export_batch_refuses_empty_or_repeated_formats(tmp_path: Path) -> None:
    for formats in ([], [ALL_FORMATS[0], ALL_FORMATS[0]]):
        with pytest.raises(ValueError, match="formats"):
            export_batch(DEVICES, tmp_path, resolver_base=RESOLVER, formats=formats)
    assert not any(tmp_path.iterdir())


def test_export_of_the_longest_id_under_the_longest_base_scans_back(tmp_path: Path) -> None:
    """The longest link an export makes (a 64-character namespace and serial under a base of
    RESOLVER_BASE_MAX_LENGTH) is read back by the scanner as its device."""
    base = RESOLVER + "/"
    base += "p" * (RESOLVER_BASE_MAX_LENGTH - len(base))
    longest = SerialDeviceId("n" * NAMESPACE_MAX_LENGTH, "S" * SERIAL_MAX_LENGTH)
    formats = [LabelFormat(symbology, ImageType.PNG) for symbology in Symbology]
    manifest = export_batch([longest], tmp_path, resolver_base=base, formats=formats)
    with manifest.open(encoding="utf-8", newline="") as handle:
        (row,) = csv.DictReader(handle)
    for label in formats:
        assert decode_device((tmp_path / row[label.column]).read_bytes()) == longest
    assert len(row["uri"]) == MAX_INPUT_LENGTH


def test_export_refuses_a_base_whose_links_would_not_parse(tmp_path: Path) -> None:
    base = RESOLVER + "/" + "p" * RESOLVER_BASE_MAX_LENGTH
    with pytest.raises(ValueError, match="resolver base is at most"):
        export_batch(DEVICES, tmp_path, resolver_base=base)
    assert not any(tmp_path.iterdir())


def test_a_qr_code_is_drawn_once_and_a_png_over_the_limit_not_at_all() -> None:
    text = "BPCERT1:" + "a" * 1200  # byte mode: a version 30-odd symbol, 140-odd modules a side
    drawn = render_qr(text, ImageType.PNG, module_px=4, max_png_side_px=4096)
    assert drawn == render(text, Symbology.QR, ImageType.PNG, module_px=4)
    assert decode_one(drawn) == text
    with pytest.raises(ImageTooLarge) as refused:
        render_qr(text, ImageType.PNG, module_px=40, max_png_side_px=4096)
    assert refused.value.side_px > 4096
    svg = render_qr(text, ImageType.SVG, module_px=40, max_png_side_px=4096)
    assert svg.startswith(b"<?xml")
