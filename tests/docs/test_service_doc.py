"""docs/service.md is a runnable session: its bash blocks run here in order, in one bash shell, in a
fresh directory, against a real server (the port 8000 of the text is replaced by a free one)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "service.md"
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


@pytest.mark.slow
def test_service_doc_session_runs(tmp_path):
    script = "\n".join(BLOCK.findall(DOC.read_text())).replace(":8000", f":{free_port()}") \
        .replace("--port 8000", "--port PORT")
    port = re.search(r"127\.0\.0\.1:(\d+)", script).group(1)
    script = script.replace("--port PORT", f"--port {port}")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MINIUNLEARN_NO_PROGRESS": "1",
           "MINIUNLEARN_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", "-c", "set -euo pipefail\ntrap 'kill ${SERVER:-} 2>/dev/null || true' EXIT\n"
                           + script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"status":"queued"' in out and '"status":"done"' in out and '"certificate":' in out
    assert "valid: receipt of request" in out and "INVALID" in out and "exit 1 (altered)" in out
    assert '"labels":[' in out and '"model_sha256":' in out
    assert "miniunlearn_served_certificate " in out
    assert '"5003"' not in (tmp_path / "receipt.json").read_text()  # receipts hold key hashes only
