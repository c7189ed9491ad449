"""What an outside probe of the server found (issue 21), each mended: an empty ``class=`` and a
multipart part without a content type (or without a filename) are accepted as the schema allows,
a 422 no longer shows Python object reprs, and the server and the command line record and check
the same model_info."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw
from test_limits import refused

from sbirkit.serve.queries import field_bytes, sniff_media

STROKES = {"strokes": [[[10, 50, 90], [10, 90, 10]], [[20, 80], [50, 50]]], "canvas": [100, 100]}


def png_sketch() -> bytes:
    img = Image.new("L", (64, 64), 255)
    d = ImageDraw.Draw(img)
    d.ellipse([10, 10, 50, 50], outline=0, width=2)
    d.line([5, 60, 60, 5], fill=0, width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text[:300]
    return [r["id"] for r in response.json()["results"]]


def test_an_empty_class_parameter_is_no_filter(client):
    unfiltered = ids(client.post("/search", json=STROKES))
    assert ids(client.post("/search?class=", json=STROKES)) == unfiltered
    assert ids(client.post("/search?class=&class=", json=STROKES)) == unfiltered
    # an empty value beside a real one: the real one filters
    some = client.get("/info").json()["index"]["classes"]
    first = sorted(some)[0]
    got = client.post(f"/search?class=&class={first}", json=STROKES).json()
    assert got["classes"] == [first] and {r["class_name"] for r in got["results"]} == {first}


def test_a_multipart_part_without_a_content_type_is_read_by_its_content(client):
    data = png_sketch()
    want = ids(client.post("/search", content=data, headers={"Content-Type": "image/png"}))
    boundary = "sbirkitBoundary"

    def multipart(disposition: str) -> bytes:
        return (f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode() + data
                + f"\r\n--{boundary}--\r\n".encode())

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    for disposition in ('name="file"; filename="query"',  # no content type, no telling extension
                        'name="file"'):  # no filename either (curl -F 'file=<q.png')
        assert ids(client.post("/search", content=multipart(disposition), headers=headers)) == want, disposition
    # a generic type is sniffed too
    assert ids(client.post("/search", files={"file": ("q.bin", data, "application/octet-stream")})) == want


def test_an_svg_sent_as_a_text_field_is_read(client):
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="M10 10 L90 90 M10 90 L90 10" '
           'stroke="black" fill="none"/></svg>')
    want = ids(client.post("/search", content=svg.encode(), headers={"Content-Type": "image/svg+xml"}))
    assert ids(client.post("/search", files={"file": (None, svg)})) == want


def test_sniffing_and_field_bytes():
    data = png_sketch()
    assert sniff_media(data) == "image/png" and sniff_media(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_media(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp" and sniff_media(b"GIF89a...") == "image/gif"
    assert sniff_media(b'\xef\xbb\xbf <?xml version="1.0"?>\n<svg/>') == "image/svg+xml"
    assert sniff_media(b"hello") is None and sniff_media(b"<html><body/></html>") is None
    # Starlette decodes a part without a filename as UTF-8, else Latin-1: both undone exactly
    assert field_bytes(data.decode("latin-1")) == data
    assert field_bytes("<svg>é</svg>") == "<svg>é</svg>".encode()


def test_decode_errors_do_not_show_object_reprs(client):
    for body in (b"garbage", png_sketch()[:40], b"GIF89a" + b"\0" * 20):
        message = refused(client.post("/search", content=body, headers={"Content-Type": "image/png"}), 422,
                          "upload: could not decode the image")
        assert " object at 0x" not in message and "BytesIO" not in message, message
    message = refused(client.post("/search?direction=photo2photo", content=b"garbage",
                                  headers={"Content-Type": "image/png"}), 422, "could not decode the image")
    assert " object at 0x" not in message and "expected one of PNG, JPEG, WEBP, GIF" in message


def test_the_server_and_the_command_line_record_the_same_model_info(trained_run, index_dir):
    from sbirkit.index import GalleryIndex
    from sbirkit.index.run_model import load_run_encoder
    from sbirkit.serve.state import load_model

    served = load_model(trained_run).info
    assert served == load_run_encoder(trained_run, "best")[2]  # the one builder, for `index build` and `embed` too
    assert GalleryIndex.read_meta(index_dir)["model_info"] == served  # what `index build` recorded
    assert set(served) == {"run", "fingerprint", "which", "backbone", "embed_dim", "image_size"}
