"""Expected failures are one line on stderr, rc != 0, no traceback (issue 12, item 5): a YAML
syntax error, an unusable ``--out``, policy typos in ``run``, ``dummy --iterations 0``, a killed
env worker, an env worker that cannot render, a full disk."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from maniflow_rl.cli.main import main as cli_main


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"maniflow-rl {command}: error: "), err
    return err


def test_yaml_syntax_error_in_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo:\n  num_envs: [1, 2\n")
    assert cli_main(["run", "--config", str(bad), "--out", str(tmp_path / "r")]) == 1
    assert "YAML syntax error (line 3" in _one_line_error(capsys, "run")
    bad.write_text("- just\n- a list\n")
    assert cli_main(["run", "--config", str(bad), "--out", str(tmp_path / "r")]) == 1
    assert "expected a mapping" in _one_line_error(capsys, "run")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [
    ["run"], ["finetune", "--checkpoint", "missing.pt"], ["demos", "--task", "reach-v3"],
    ["dummy", "--iterations", "1"]], ids=["run", "finetune", "demos", "dummy"])
def test_out_that_is_a_file_or_below_one(tmp_path, capsys, command):
    a_file = tmp_path / "file"
    a_file.write_text("user data")
    for out, words in ((a_file, "is a file"), (a_file / "sub", "lies below the file")):
        assert cli_main([*command, "--out", str(out), "--no-progress"]) == 1
        assert words in _one_line_error(capsys, command[0])
    assert a_file.read_text() == "user data"


@pytest.mark.parametrize("command", [["run"], ["finetune", "--checkpoint", "missing.pt"],
                                     ["demos", "--task", "reach-v3"]],
                         ids=["run", "finetune", "demos"])
def test_out_in_a_read_only_directory(tmp_path, capsys, monkeypatch, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:   # root writes anywhere: make the write probe fail as it would
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(locked))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        assert cli_main([*command, "--out", str(locked / "out"), "--no-progress"]) == 1
        assert "is not writable" in _one_line_error(capsys, command[0])
        assert not (locked / "out").exists()
    finally:
        locked.chmod(0o755)


def test_policy_typos_in_run(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli_main(["run", "--out", out, "policy.horizn=8"]) == 1
    assert "did you mean policy.horizon" in _one_line_error(capsys, "run")
    assert cli_main(["run", "--out", out, "finetune_policy.noise_levl=0.3"]) == 1
    assert "finetune_policy.noise_level" in _one_line_error(capsys, "run")
    assert cli_main(["run", "--out", out, "finetune_policy.horizon=8"]) == 1
    assert "cannot change at fine-tune time" in _one_line_error(capsys, "run")
    assert not (tmp_path / "r").exists()


def test_dummy_with_zero_iterations(tmp_path, capsys):
    assert cli_main(["dummy", "--iterations", "0", "--out", str(tmp_path / "d")]) == 1
    assert "--iterations must be >= 1" in _one_line_error(capsys, "dummy")


def test_killed_env_worker_is_named(tmp_path):
    pytest.importorskip("metaworld")
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner

    with MetaWorldEnvRunner("metaworld/reach-v3", num_envs=2, num_workers=2,
                            point_cloud_source="geometry", num_points=32) as runner:
        runner.reset()
        victim = runner._workers.procs[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        with pytest.raises(RuntimeError, match=r"env worker 1 died \(exit code -9\)"):
            runner.step(torch.zeros(2, 4).numpy())


def test_worker_error_is_one_line(tmp_path):
    from maniflow_rl.envs.vector.processes import worker_error_line

    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
             "    boom()\nRenderingUnavailableError: MuJoCo could not create a context\n")
    assert worker_error_line(trace) == "RenderingUnavailableError: MuJoCo could not create " \
                                       "a context"


def test_invalid_mujoco_gl_in_a_worker_is_one_line(monkeypatch):
    pytest.importorskip("metaworld")
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner

    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")   # the spawned worker imports mujoco
    with pytest.raises(RuntimeError) as info:
        MetaWorldEnvRunner("metaworld/reach-v3", num_envs=1, num_workers=1, num_points=32)
    message = str(info.value)
    assert message.startswith("env worker 0 failed: ") and "\n" not in message
    assert "no-such-backend" in message


def test_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    from maniflow_rl.utils import checkpoint as checkpoint_module

    def disk_full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    target = tmp_path / "ckpt" / "latest.pt"
    with pytest.raises(OSError, match="no space left on device") as info:
        checkpoint_module.save_checkpoint_atomic({"kind": "ppo"}, target)
    assert info.value.filename == str(target)
    assert not target.exists() and list(target.parent.iterdir()) == []   # no temp file left
    # through the command line: one line naming the file
    assert cli_main(["dummy", "--iterations", "1", "--out", str(tmp_path / "d"),
                     "ppo.num_envs=2", "ppo.batch_size=8", "ppo.num_steps_per_rollout=4",
                     "ppo.save_interval=1", "--no-progress"]) == 1
    err = _one_line_error(capsys, "dummy")
    assert "no space left on device" in err and str(tmp_path / "d") in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_while_appending_metrics_names_the_file():
    from maniflow_rl.utils.run_files import append_metrics_row

    with pytest.raises(OSError, match="No space left on device") as info:
        append_metrics_row("/dev/full", {"iteration": 1})   # every write: ENOSPC at flush
    assert info.value.filename == "/dev/full"
