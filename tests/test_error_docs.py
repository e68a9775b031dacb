"""docs/errors.md lists every registered error code, as the registry describes it."""

import subprocess
import sys
from pathlib import Path

from swarmreg.errors import markdown_table, registered_codes

ROOT = Path(__file__).resolve().parents[1]


def test_every_code_has_a_description():
    assert [code.code for code in registered_codes() if not code.description.strip()] == []


def test_the_committed_doc_is_the_generated_one():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_error_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_table_lists_every_code_once_with_its_status_and_message():
    rows = [[cell.strip() for cell in line.split(" | ")[:3]] for line in markdown_table().splitlines()[2:]]
    assert rows == [[f"| `{code.code}`", str(code.status), code.message] for code in registered_codes()]
