"""The bundled backbones work with no network at all, and never try to reach one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import PROJECT_ROOT

# Runs in a fresh interpreter with the hub's offline switches unset, so nothing but our own
# code can keep the libraries from going online; every attempt to open a connection or to
# resolve a host is recorded (and refused) and the list must stay empty.
SCRIPT = textwrap.dedent(
    """
    import socket, sys, tempfile
    attempts = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append((name, repr(args)[:80]))
            raise OSError("network access is not allowed in this test")
        return blocked

    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect_ex")
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")

    from convrec.text.encoder import load_sentence_encoder
    from convrec.text.lm import CompactLMConfig, build_causal_lm, load_causal_lm
    from convrec.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    encoder = load_sentence_encoder()
    assert encoder.encode(["a film about space"]).shape == (1, 384)
    lm = build_causal_lm(CompactLMConfig(n_layer=1, n_embd=32, n_head=2), tokenizer)
    with tempfile.TemporaryDirectory() as directory:
        lm.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        load_causal_lm(directory)
    print("attempts:", attempts)
    sys.exit(1 if attempts else 0)
    """
)


def test_bundled_backbones_load_without_touching_the_network(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty hub cache: nothing to fall back on
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attempts: []" in result.stdout
