from retrieval_lib.infra.progress import progress_bar


def test_progress_flag_and_environment_both_silence_the_bar(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress_bar(range(2), progress=True).disable
    assert progress_bar(range(2), progress=False).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(2), progress=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress_bar(range(2), progress=True).disable
