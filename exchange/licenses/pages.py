"""The resolver's page for people: what a phone shows after scanning a device's barcode.

One self-contained HTML document (no scripts, no external resources), every value escaped.
It shows the same answer the JSON form gives, and says how to check it on chain.
"""

from __future__ import annotations

from html import escape
from typing import Any

_HEADLINES = {
    "licensed": ("Licensed", "This device is licensed under the patent pool.", "#1b7f3b"),
    "revoked": ("Revoked", "This device's licence was revoked.", "#b3261e"),
    "suspended": ("Suspended", "This device's batch is suspended by the foundation.", "#b26a00"),
    "unknown": ("Unknown", "No registered batch holds this device.", "#555555"),
}

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
.status{color:#fff;border-radius:.5rem;padding:1rem 1.25rem;margin-bottom:1.5rem}
.status h1{margin:0 0 .25rem;font-size:1.6rem}.status p{margin:0}
dl{margin:0}dt{font-weight:600;font-size:.85rem;color:#555;margin-top:.8rem}
dd{margin:.15rem 0 0;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:.95rem}
details{margin-top:1.5rem}code{overflow-wrap:anywhere}
"""


def _row(label: str, value: Any) -> str:
    shown = "—" if value is None else str(value)
    return f"<dt>{escape(label)}</dt><dd>{escape(shown)}</dd>"


def device_page(answer: dict[str, Any]) -> str:
    """The HTML page of one resolver answer (the dict of ``resolver.resolve``)."""
    title, sentence, colour = _HEADLINES[answer["status"]]
    rows = [
        _row("Device", answer["device_id"]),
        _row("Manufacturer", answer["manufacturer"]),
        _row("Batch", answer["batch_id"]),
        _row("Index in batch", answer["index"]),
        _row("BPC per device (base units)", answer["bpc_per_device_wei"]),
        _row("Device id hash", answer["id_hash"]),
        _row("Batch Merkle root", answer["root"]),
        _row("Registry contract", answer["registry"]),
        _row("Chain id", answer["chain_id"]),
        _row("As of block", answer["block"]),
    ]
    proof = "".join(f"<li><code>{escape(node)}</code></li>" for node in answer["proof"])
    check = (
        "<details><summary>Check it yourself</summary><p>Call <code>deviceStatus("
        f"{escape(str(answer['batch_id']))}, {escape(str(answer['index']))}, id hash, proof)</code>"
        " on the registry contract on chain "
        f"{escape(str(answer['chain_id']))}; it returns 0 (Licensed) for a licensed device. "
        f"Proof ({len(answer['proof'])} hashes):</p><ol>{proof}</ol></details>"
        if answer["proof"] or answer["status"] != "unknown"
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} — {escape(answer['device_id'])}</title><style>{_STYLE}</style></head><body>"
        f'<div class="status" style="background:{colour}">'
        f"<h1>{escape(title)}</h1><p>{escape(sentence)}</p></div>"
        f"<dl>{''.join(rows)}</dl>{check}</body></html>"
    )


def refusal_page(title: str, detail: str) -> str:
    """The HTML page of a refused lookup (a malformed device id, a bad check digit), for people:
    the same title and reason the problem document gives, escaped."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<div class="status" style="background:#555555"><h1>{escape(title)}</h1>'
        "<p>This code does not name a device the resolver can look up.</p></div>"
        f"<dl>{_row('Reason', detail)}</dl></body></html>"
    )


def wants_html(accept: str | None) -> bool:
    """True when the client prefers HTML to JSON (browsers); JSON otherwise, and on a tie.

    Reads the media ranges' q-values; ``*/*`` alone (curl, HTTP libraries) means JSON.
    """
    if not accept:
        return False
    html_q = json_q = -1.0
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            html_q = max(html_q, q)
        elif media in ("application/json", "application/problem+json"):
            json_q = max(json_q, q)
    return html_q > 0 and html_q > json_q
