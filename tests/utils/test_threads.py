"""The thread policy (issue 14, ``utils/threads.py``, ``utils/thread_peers.py``): settings and
their errors, the ``auto`` count, the process registry, installing / restoring a policy, the
trainer's rollout / update phases, and one-thread DataLoader workers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from maniflow_rl.utils import thread_peers, threads
from maniflow_rl.utils.threads import ThreadPolicy, thread_policy


@pytest.fixture
def registry(tmp_path):
    return tmp_path / "registry"


@pytest.fixture
def sleeper():
    """A live process that is not this one (a second run, as the registry sees it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_settings_and_errors():
    ThreadPolicy().validate()
    ThreadPolicy(3, 1).validate()
    for bad in (0, -1, "many", 1.5, True, None):
        with pytest.raises(ValueError, match="runtime.torch_threads must be 'auto' or an "
                                             "integer >= 1"):
            ThreadPolicy(bad).validate()
    with pytest.raises(ValueError, match="runtime.rollout_torch_threads must be 'same'"):
        ThreadPolicy("auto", "auto").validate()


def test_auto_count_splits_the_cores_between_processes():
    assert threads.auto_thread_count(8, 1) == 8
    assert threads.auto_thread_count(8, 3) == 2          # floor: never oversubscribed
    assert threads.auto_thread_count(2, 5) == 1          # at least one
    assert threads.auto_thread_count(8, 1, cap=3) == 3   # OMP_NUM_THREADS caps auto
    assert ThreadPolicy().counts(4, 2) == {"main": 2, "update": 2, "rollout": 2}
    assert ThreadPolicy(3, 1).counts(16, 4) == {"main": 3, "update": 3, "rollout": 1}
    assert threads.env_thread_cap({"OMP_NUM_THREADS": "2"}) == 2
    assert threads.env_thread_cap({"OMP_NUM_THREADS": ""}) is None
    assert threads.env_thread_cap({"OMP_NUM_THREADS": "0"}) is None
    line = threads.describe_plan(ThreadPolicy(), {"main": 1, "rollout": 1}, 2, 2, cap=None)
    assert "torch threads: 1 in the main process (auto: 2 usable core(s) / 2 maniflow-rl" in line
    assert "workers and Ray env actors: 1 each" in line


def test_registry_counts_live_processes_only(registry, sleeper):
    assert thread_peers.live_processes(registry) == 1        # no folder yet: this process
    own = thread_peers.register(registry)
    assert own.read_text() == thread_peers.process_start_token(os.getpid())
    assert thread_peers.live_processes(registry) == 1
    thread_peers.register(registry, sleeper.pid)
    assert thread_peers.live_processes(registry) == 2
    sleeper.kill()
    sleeper.wait()
    assert thread_peers.live_processes(registry) == 1        # a killed run's entry is removed
    assert not (registry / str(sleeper.pid)).exists()
    (registry / str(os.getppid())).write_text("1")           # pid reused by another process
    assert thread_peers.live_processes(registry) == 1
    thread_peers.unregister(own)
    assert not own.exists()


def test_start_token_parsing():
    stat = "42 (a (b) c) S " + " ".join(str(i) for i in range(4, 30))
    assert thread_peers.start_token(stat) == "22"
    assert thread_peers.start_token("garbage") == ""


def test_thread_policy_installs_logs_and_restores(registry, sleeper, caplog):
    torch.set_num_threads(1)
    with caplog.at_level(logging.INFO, logger="maniflow_rl"):
        with thread_policy(ThreadPolicy(2), local_world_size=1, registry=registry) as main:
            assert main == 2 and torch.get_num_threads() == 2
            assert (registry / str(os.getpid())).exists()
            assert threads.installed_policy() == ThreadPolicy(2)
    assert "torch threads: 2 in the main process (runtime.torch_threads=2)" in caplog.text
    assert torch.get_num_threads() == 1 and threads.installed_policy() is None
    assert not (registry / str(os.getpid())).exists()


def test_auto_splits_between_registered_processes_and_torchrun_ranks(registry, sleeper,
                                                                      monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with thread_policy(local_world_size=1, registry=registry) as main:
        assert main == 4
    thread_peers.register(registry, sleeper.pid)              # a second run on this machine
    with thread_policy(local_world_size=1, registry=registry) as main:
        assert main == 2
    with thread_policy(local_world_size=4, registry=registry) as main:   # 4 ranks on the node
        assert main == 1
    torch.set_num_threads(1)


def test_phases_follow_the_policy_and_recount(registry, sleeper, monkeypatch, caplog):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threads.phase("rollout"):                            # no policy installed: no-op
        assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="phase must be one of"):
        with threads.phase("eval"):
            pass
    with thread_policy(ThreadPolicy("auto", 1), local_world_size=1, registry=registry):
        with threads.phase("rollout"):
            assert torch.get_num_threads() == 1
        with threads.phase("update"):
            assert torch.get_num_threads() == 4
        assert torch.get_num_threads() == 4
        thread_peers.register(registry, sleeper.pid)          # another run starts
        with caplog.at_level(logging.INFO, logger="maniflow_rl"):
            with threads.phase("update"):
                assert torch.get_num_threads() == 2
        assert "torch threads 4 -> 2" in caplog.text
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_trainer_runs_rollout_and_update_in_their_phases(tmp_path, registry, monkeypatch):
    """The PPO trainer's rollout sees ``rollout_torch_threads``, its update ``torch_threads``."""
    import maniflow_rl.rl.ppo.trainer as ppo_trainer
    from maniflow_rl import create_maniflow_ppo_trainer

    seen = {}
    trainer = create_maniflow_ppo_trainer(
        {"obs": {"agent_pos": {"shape": [4]}}, "action": {"shape": [2]}},
        ppo_config=dict(num_envs=2, num_steps_per_rollout=2, batch_size=4, update_epochs=1,
                        eval_episodes=0, save_path=str(tmp_path / "ppo")),
        policy_config={"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1,
                       "num_inference_steps": 2, "n_emb": 16, "n_layer": 1, "n_head": 2})
    collect, update = trainer.collector.collect, ppo_trainer.ppo_update

    def recording(name, fn):
        def wrapped(*args, **kwargs):
            seen[name] = torch.get_num_threads()
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(trainer.collector, "collect", recording("rollout", collect))
    monkeypatch.setattr(ppo_trainer, "ppo_update", recording("update", update))
    with thread_policy(ThreadPolicy(2, 1), local_world_size=1, registry=registry):
        trainer.train_iteration()
    trainer.close()
    assert seen == {"rollout": 1, "update": 2}


class _ThreadsOfWorker(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.tensor([torch.get_num_threads(), int(os.environ["OMP_NUM_THREADS"])])


def test_data_loader_workers_run_one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    loader = torch.utils.data.DataLoader(_ThreadsOfWorker(), batch_size=1, num_workers=1,
                                         worker_init_fn=threads.limit_worker_threads)
    try:
        assert [row.tolist() for row in loader] == [[[1, 1]], [[1, 1]]]
    finally:
        torch.set_num_threads(1)


def test_worker_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with threads.worker_environment():
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "3" and "MKL_NUM_THREADS" not in os.environ


def test_cpu_load_parsing_and_foreign_cores():
    from maniflow_rl.utils import cpu_load

    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = ("cpu  1100 5 20 900 30 1 2 3 7 0\n"        # the aggregate line is not read
            "cpu0 100 5 20 900 30 1 2 3 7 0\n"
            "cpu1 1000 0 0 0 0 0 0 0 0 0\nintr 5 6\n")
    assert cpu_load.parse_machine_busy(stat) == (100 + 5 + 20 + 1 + 2 + 3) + 1000
    assert cpu_load.parse_machine_busy(stat, cpus={0}) == 131   # only the allowed cores
    # a process name with spaces and parentheses; utime = field 14, stime = field 15
    own = "4242 (my (odd) name) R 1 2 3 4 5 6 7 8 9 10 111 222 12 13 20 0 3"
    assert cpu_load.parse_own_jiffies(own) == 333
    # 2 s at 100 ticks/s: the machine was busy 350 jiffies, this process 150 -> 1 other core
    assert cpu_load.foreign_cores(350, 150, 2.0, 100) == pytest.approx(1.0)
    assert cpu_load.foreign_cores(100, 150, 2.0, 100) == 0.0      # counter skew: never < 0
    assert cpu_load.foreign_cores(100, 0, 0.0, 100) == 0.0
    sample = cpu_load.sample()
    assert sample is None or (sample.machine_busy >= sample.own >= 0 and sample.wall > 0)


def test_auto_count_leaves_the_cores_other_processes_use():
    assert threads.auto_thread_count(2, 1, foreign_cores=1.0) == 1
    assert threads.auto_thread_count(2, 1, foreign_cores=0.5) == 1   # half a core counts
    assert threads.auto_thread_count(2, 1, foreign_cores=0.4) == 2
    assert threads.auto_thread_count(2, 1, foreign_cores=3.0) == 1   # at least one
    # registered peers are also foreign load: the two limits do not add up
    assert threads.auto_thread_count(16, 2, foreign_cores=8.0) == 8
    assert ThreadPolicy(3).counts(2, 1, foreign_cores=1.0)["main"] == 3   # explicit: kept


def test_update_phases_measure_other_processes_and_adapt(registry, monkeypatch, caplog):
    """Simulated counters: each update phase lasts 1 s at 100 ticks/s, this process uses
    2 cores (200 jiffies); the machine is busy 300 (one foreign core), later 200 (none)."""
    from maniflow_rl.utils import cpu_load

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "ticks_per_second", lambda: 100)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    clock = {"busy": 0, "own": 0, "wall": 0.0, "foreign": 100, "calls": 0}

    def fake_sample():   # called at the start and the end of each update phase
        clock["calls"] += 1
        if clock["calls"] % 2 == 0:
            clock["busy"] += 200 + clock["foreign"]
            clock["own"] += 200
            clock["wall"] += 1.0
        return cpu_load.CpuSample(clock["busy"], clock["own"], clock["wall"])

    monkeypatch.setattr(cpu_load, "sample", fake_sample)
    with thread_policy(ThreadPolicy(), local_world_size=1, registry=registry):
        with threads.phase("update"):
            assert torch.get_num_threads() == 2
        with caplog.at_level(logging.INFO, logger="maniflow_rl"):
            with threads.phase("rollout"):
                assert torch.get_num_threads() == 1
        assert "torch threads 2 -> 1" in caplog.text and "keep 1.0 core(s) busy" in caplog.text
        clock["foreign"] = 0                         # the other process ended
        with threads.phase("update"):
            assert torch.get_num_threads() == 1
        with threads.phase("update"):
            assert torch.get_num_threads() == 2
