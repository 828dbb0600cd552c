"""Licensing: threshold licences, self-certification and per-device licences (white paper §3.1(2), §4.7).

Pure modules, values in and values out (``barcodes.export_batch`` writes the
files it is asked to write, nothing else):

* ``device_ids``: GS1 (GTIN + serial), IMEI and manufacturer-serial ids, one
  canonical form each, their keccak256 ``id_hash`` (the on-chain deviceIdHash),
  and GS1 Digital Link URIs.
* ``merkle``: the batch tree ``DeviceLicenses`` verifies: leaves, root, proofs,
  a serialised form for storage.
* ``barcodes``: a device's Digital Link as QR Code or Data Matrix (PNG, SVG),
  decoding images back to the URI, and batch export with a CSV manifest.
* ``certificates``: the EIP-712 licence certificate, its compact QR text form, and
  the checks a verifier runs against chain facts.
* ``uploads``: device lists (JSON, CSV) read all or nothing, refusals located.
* ``pages``: the resolver's HTML page and content negotiation.

The service around them:

* ``service`` (threshold licences, unsigned member transactions, certificate
  verification), ``batches`` (device batch uploads), ``resolver`` (device answers
  and the tree cache), ``indexer`` (DeviceLicenses events from a persisted cursor),
  ``transactions`` (unsigned transaction building), ``repository`` (all SQL),
  ``models`` (tables), ``schemas`` (API shapes);
* ``routes`` (``/v1/licences``), ``device_routes`` (``/v1/devices`` batches),
  ``resolver_routes`` (device queries and the Digital Link paths, with their lean path),
  ``resolver_app`` (the resolver alone, ``exchange licence resolver``), ``lifespan``
  (start-up hooks), ``cli`` (``exchange licence …``).
"""
