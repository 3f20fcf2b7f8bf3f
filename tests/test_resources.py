import sys

import pytest


def test_thread_choice_follows_the_request_or_the_idle_cores(monkeypatch):
    import os

    import repreval.resources as resources

    assert resources.choose_threads(3) == 3
    assert 0 <= resources.busy_cores(2, seconds=0.05) <= 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    for busy, threads in ((1.1, 1), (0.2, 2), (7.0, 1)):
        monkeypatch.setattr(resources, "busy_cores", lambda cores, busy=busy: busy)
        assert resources.choose_threads() == threads, busy


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_memory_is_kept_for_reuse_and_numbers_do_not_change():
    import torch

    from repreval.resources import keep_freed_memory

    torch.manual_seed(0)
    a = torch.randn(64, 512)
    before = a @ a.T
    assert keep_freed_memory()
    assert torch.equal(a @ a.T, before)
