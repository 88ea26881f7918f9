"""``python -m lora_ext app`` starts the standalone app on 127.0.0.1 in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from tests.browser_helpers import REPO, free_port, write_peft_lora


def test_app_command_serves_the_app(tmp_path):
    write_peft_lora(tmp_path, "style", seed=1)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "lora_ext", "app", "--port", str(port), "--lora-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    page = r.read().decode("utf-8", "replace")
                    break
            except OSError:
                time.sleep(0.2)
        assert page is not None, proc.stdout.read().decode() if proc.poll() is not None else "no answer"
        assert 'og:title" content="lora_ext"' in page
        assert "lora_ext_app_prompt" in page and "lora_ext_data" in page
        assert "lora-ext-card" in page  # the card records are in the initial config
    finally:
        proc.terminate()
        proc.wait(timeout=20)
