"""Per-device licensing rules: device identifiers, batch Merkle trees, barcodes.

Pure modules, values in and values out (``barcodes.export_batch`` writes the
files it is asked to write, nothing else):

* ``device_ids``: GS1 (GTIN + serial), IMEI and manufacturer-serial ids, one
  canonical form each, their keccak256 ``id_hash`` (the on-chain deviceIdHash),
  and GS1 Digital Link URIs.
* ``merkle``: the batch tree ``DeviceLicenses`` verifies: leaves, root, proofs,
  a serialised form for storage.
* ``barcodes``: a device's Digital Link as QR Code or Data Matrix (PNG, SVG),
  decoding images back to the URI, and batch export with a CSV manifest.
"""
