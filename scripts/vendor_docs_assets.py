"""Vendor the API documentation pages' JavaScript and CSS into the app (app/api/docs_assets),
so that /schema/swagger and /schema/redoc render without internet.

Fetches the pinned npm packages with `npm pack` (the npm registry, no CDN), copies the
few files the pages load plus their licences (PATCHES: the one CDN link Redoc's bundle
keeps points at our own icon instead), and writes MANIFEST.json (package, version,
sha256 of every file), which tests/api/test_docs.py checks against the files.

    python scripts/vendor_docs_assets.py
"""

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
TARGET: Final = ROOT / "app" / "api" / "docs_assets"
# package@version -> {file inside the package: name in docs_assets}
PACKAGES: Final = {
    "swagger-ui-dist@5.35.0": {
        "package/swagger-ui-bundle.js": "swagger-ui-bundle.js",
        "package/swagger-ui-standalone-preset.js": "swagger-ui-standalone-preset.js",
        "package/swagger-ui.css": "swagger-ui.css",
        "package/favicon-32x32.png": "favicon-32x32.png",
        "package/LICENSE": "LICENSE.swagger-ui",
    },
    "redoc@2.5.2": {
        "package/bundles/redoc.standalone.js": "redoc.standalone.js",
        "package/LICENSE": "LICENSE.redoc",
    },
}

# Redoc shows a "Redocly" badge loaded from its CDN: point it at our own icon, so that the
# page makes no request beyond the server it came from.
PATCHES: Final = {
    "redoc.standalone.js": [
        ("https://cdn.redoc.ly/redoc/logo-mini.svg", "/schema/assets/favicon-32x32.png")
    ],
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def patch(path: Path, replacements: list[tuple[str, str]]) -> None:
    text = path.read_bytes()
    for old, new in replacements:
        assert old.encode() in text, (path.name, old)
        text = text.replace(old.encode(), new.encode())
    path.write_bytes(text)


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for spec, files in PACKAGES.items():
            packed = subprocess.run(
                ["npm", "pack", spec, "--silent"],
                cwd=folder,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
            with tarfile.open(Path(folder) / packed) as archive:
                for member, name in files.items():
                    extracted = archive.extractfile(member)
                    assert extracted is not None, member
                    with (TARGET / name).open("wb") as out:
                        shutil.copyfileobj(extracted, out)
                    patch(TARGET / name, PATCHES.get(name, []))
                    manifest[name] = {"package": spec, "sha256": sha256(TARGET / name)}
    (TARGET / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"vendored {len(manifest)} files into {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
