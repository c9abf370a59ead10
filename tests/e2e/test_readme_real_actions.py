"""The README's "Acting on the world" section works as written: its config loads and its curl sends.

The TOML block is used unchanged but for the SMTP server (a real aiosmtpd on loopback with STARTTLS
and AUTH, whose self-signed CA is added as ``ca_file``); the curl block runs unchanged but for the
server URL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import server_env
from oe_testing.http_server import free_port
from oe_testing.processes import http_server
from oe_testing.smtp import SMTP_PASSWORD, SMTP_USER, running_smtp

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(kind: str) -> list[str]:
    section = README.read_text().split("## Acting on the world", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{kind}\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")
def test_readme_config_and_send_email_example_work_as_written(tmp_path: Path) -> None:
    (config_text,) = section_blocks("toml")
    (curl_block,) = section_blocks("bash")
    with running_smtp(free_port(), tls_dir=tmp_path) as smtp:
        config = config_text.replace('smtp_url = "smtp://smtp.example.com:587"',
                                     f'smtp_url = "{smtp.url}"\nca_file = "{smtp.ca_file}"')  # fmt: skip
        assert config != config_text
        config_file = tmp_path / "openexec.toml"
        config_file.write_text(config)
        env = server_env(tmp_path / "state", SMTP_USERNAME=SMTP_USER, SMTP_PASSWORD=SMTP_PASSWORD,
                         EXAMPLE_API_AUTHORIZATION="Bearer readme-example")  # fmt: skip
        with http_server(env, tmp_path, "--config", str(config_file)) as server:
            script = curl_block.replace("http://127.0.0.1:8000", server.base_url)
            command = ["bash", "-euo", "pipefail", "-c", script]
            runs = [
                subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
                for _ in range(2)
            ]
            server_log = server.log.read_text()
        first, again = (json.loads(run.stdout) for run in runs)
        assert SMTP_PASSWORD not in server_log + runs[0].stdout + runs[1].stdout
        assert first["status"] == "executed", first
        assert again["status"] == "replayed"
        assert len(smtp.recorder.delivered) == 1
        assert smtp.recorder.delivered[0].message["Message-ID"] == first["result"]["message_id"]
        assert smtp.recorder.delivered[0].rcpt_tos == ["alice@example.com"]
