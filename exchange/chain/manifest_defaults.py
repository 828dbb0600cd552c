"""Where the deployment manifest is unless configured: shared by the service (``lifespan``) and
the commands (``exchange.cli``), and light enough for the commands to import at start."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MANIFEST = Path("deployments/manifest.json")
MANIFEST_VARIABLE = "EXCHANGE_DEPLOYMENT_MANIFEST"  # the service's deployment_manifest setting
