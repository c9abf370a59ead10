"""The server key on disk (SPEC §7; issue 9 "the server key ... can be read half-written")."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
from multiprocessing.synchronize import Barrier
from pathlib import Path

from openexec_mcp.keystore import SERVER_KEY_FILENAME, _publish_once, load_or_create_server_key  # pyright: ignore[reportPrivateUsage]

RACERS = 8
ROUNDS = 2


def _race(state_dir: str, barrier: Barrier, results: multiprocessing.Queue[str]) -> None:  # pyright: ignore[reportInvalidTypeArguments]
    barrier.wait()
    try:
        results.put(load_or_create_server_key(Path(state_dir)).kid)
    except Exception as exc:
        results.put(f"error: {type(exc).__name__}: {exc}")


def test_processes_racing_on_a_fresh_state_dir_all_load_one_whole_key(tmp_path: Path) -> None:
    """Real processes released together: every one loads the same key, none a half-written file."""
    context = multiprocessing.get_context("spawn")
    for round_number in range(ROUNDS):
        state_dir = tmp_path / f"state-{round_number}"
        barrier = context.Barrier(RACERS)
        results = context.Queue()
        racers = [context.Process(target=_race, args=(str(state_dir), barrier, results)) for _ in range(RACERS)]
        for racer in racers:
            racer.start()
        kids = [results.get(timeout=120) for _ in racers]
        for racer in racers:
            racer.join(timeout=60)
            assert racer.exitcode == 0
        assert len(set(kids)) == 1 and not kids[0].startswith("error"), kids
        # Nothing but the key is left behind: every temporary file was removed.
        assert os.listdir(state_dir) == [SERVER_KEY_FILENAME]
        assert stat.S_IMODE((state_dir / SERVER_KEY_FILENAME).stat().st_mode) == 0o600


def test_a_loser_never_replaces_the_winners_key_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    winner = load_or_create_server_key(tmp_path)
    path = tmp_path / SERVER_KEY_FILENAME
    before = path.read_bytes()
    _publish_once(path, b"-----BEGIN PRIVATE KEY-----\nnot the winner's\n")
    assert path.read_bytes() == before
    assert load_or_create_server_key(tmp_path).kid == winner.kid
    assert os.listdir(tmp_path) == [SERVER_KEY_FILENAME]


def test_a_half_written_temporary_file_of_a_crashed_writer_is_never_loaded(tmp_path: Path) -> None:
    """A writer killed mid-write leaves only its private temporary name; the key name stays free."""
    (tmp_path / f".{SERVER_KEY_FILENAME}.deadbeefdeadbeef.tmp").write_bytes(b"-----BEGIN PRIV")
    key = load_or_create_server_key(tmp_path)
    assert load_or_create_server_key(tmp_path).kid == key.kid


def test_a_first_start_killed_while_writing_the_server_key_never_bricks_the_state_dir(tmp_path: Path) -> None:
    """kill -9 half-way through writing a new key: the next start makes (or loads) a whole key.

    Before the fix the key was written in place, so the kill left a half-written
    ``server_key.pem`` that every later start refused ("not a PEM private key").
    """
    from oe_testing.processes import run_cli  # here, not at the top: the spawned racers import this module

    env = {**os.environ, "OPENEXEC_STATE_DIR": str(tmp_path / "state"), "OPENEXEC_UNSAFE_FAULTS": "in_server_key"}
    killed = run_cli("keys", "public", env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "state" / SERVER_KEY_FILENAME).exists()
    del env["OPENEXEC_UNSAFE_FAULTS"]
    started = run_cli("keys", "public", env=env)
    assert started.returncode == 0, started.stderr
    kid = json.loads(started.stdout)["keys"][0]["kid"]
    assert kid == load_or_create_server_key(tmp_path / "state").kid
