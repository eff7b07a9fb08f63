"""``write_outputs``: what ``report.md`` says, and the output folder under interruption (it
holds one run's files, never a mix: `casdri._io.deferred_interrupts`)."""
from __future__ import annotations

import signal

import pytest

from casdri._io import deferred_interrupts
from casdri.synthetic import make_synthetic_cache
from search import report
from search.run import run_search


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cache = make_synthetic_cache(tmp_path_factory.mktemp("atomic") / "cache",
                                 n_soundscapes=60, seed=2, load=False)
    return [run_search(cache, stage="gates", folds=3, trials=4, seed=s) for s in (1, 2)]


def _snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_an_interrupt_while_rendering_leaves_the_earlier_run_whole(results, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "out"
    report.write_outputs(results[0], out)
    before = _snapshot(out)
    assert {"policy.yaml", "trials.parquet", "report.md"} <= set(before)

    def interrupted(*_args):
        raise KeyboardInterrupt  # Ctrl-C while matplotlib draws (seconds on a real run)
        yield  # noqa: unreachable - makes this a generator, as report._figures is

    monkeypatch.setattr(report, "_figures", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_outputs(results[1], out)
    assert _snapshot(out) == before


def test_a_signal_while_writing_lands_after_the_last_file(results, tmp_path, monkeypatch):
    out = tmp_path / "out"
    report.write_outputs(results[0], out)
    old = _snapshot(out)
    real = report.atomic_write_bytes
    calls = []

    def write_then_interrupt(path, data):
        calls.append(path)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first of the files
        return real(path, data)

    monkeypatch.setattr(report, "atomic_write_bytes", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        report.write_outputs(results[1], out)
    new = _snapshot(out)
    assert len(calls) == len(new) >= 4  # every file of the new run was written
    for name in ("policy.yaml", "trials.parquet", "report.md"):
        assert new[name] != old[name], name
    assert b"seed: 2" in new["policy.yaml"] and b"seed 2" in new["report.md"]


def test_deferred_interrupts_delivers_the_first_signal_once_after_the_block():
    got = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))
    try:
        with deferred_interrupts():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert got == []  # held
        assert got == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_report_names_the_rule_and_what_each_stage_did_to_the_final_policy(results, tmp_path):
    """It said ``margin 0.05 dB`` under the evidence rule, and ``kept 5/5 folds, final`` for
    stages whose result the rule dropped (auto's column, meaningless without auto)."""
    result = results[0]
    text = report.write_outputs(result, tmp_path / "out", figures=False)["report"].read_text()
    assert "evidence rule (alpha 0.01, stage alpha 0.05, at least 5 soundscapes changed)" in text
    assert "margin 0.05" not in text
    header = next(line for line in text.splitlines() if line.startswith("| stage |"))
    assert "final chain" in header and "kept" not in header and "auto" not in header
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
            for line in text.splitlines() if line.startswith("| gates ")}
    rec = next(r for r in result.final.records if r.stage == "gates")
    want = "changed the policy" if rec.gain_db > 0 else "unchanged"
    assert rows["gates"].startswith(want), rows
    if rec.note:
        assert rec.note in rows["gates"]


def test_one_fold_prints_no_fold_grouping():
    """``--folds 1`` holds nothing out, so "folds grouped by recording: N groups" (printed for
    the demo cache, whose soundscapes list their recordings) was misleading."""
    from pathlib import Path

    from search.result import summarize
    demo = Path(__file__).resolve().parents[1] / "casdri" / "data" / "demo_cache"
    one = run_search(demo, stage="gates", folds=1, trials=2, seed=0, test_split="none")
    assert one.folds.groups is not None and not one.fold_results
    assert not any(line.startswith("folds grouped by") for line in summarize(one))


def test_provenance_and_explain_say_which_soundscapes(tmp_path):
    """The policy YAML said ``n_soundscapes: 500, split: null`` for a policy tuned on the 300
    dev soundscapes (the eval ones held back by --test-split auto), and ``casdri explain`` scored
    all 500 without saying so."""
    from pathlib import Path

    import yaml

    from casdri.cache import load_cache
    from casdri.gap import explain
    demo = Path(__file__).resolve().parents[1] / "casdri" / "data" / "demo_cache"
    result = run_search(demo, stage="gates", folds=2, trials=2, seed=0)
    prov = yaml.safe_load(report.write_outputs(result, tmp_path, figures=False)["policy"]
                          .read_text())["provenance"]
    assert (prov["n_soundscapes"], prov["test_split"]) == (2012, "eval")
    assert (prov["tune_soundscapes"], prov["tune_splits"]) == (1512, ["dev"])
    cache = load_cache(demo)
    assert explain(cache).source.endswith(", 2012 soundscapes (split dev, eval)")
    assert explain(cache, mask=cache.split_mask("dev")).source.endswith(
        ", 1512 soundscapes (split dev)")


def test_deferred_interrupts_lets_the_block_s_own_error_through():
    """A full disk inside the block is the error the user sees (it was replaced by the held
    KeyboardInterrupt); the handlers are restored either way."""
    with pytest.raises(OSError, match="No space left"):
        with deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            raise OSError(28, "No space left on device")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A search whose final chain swept per-class thresholds (so the report has threshold
    figures)."""
    cache = make_synthetic_cache(tmp_path_factory.mktemp("swept") / "cache",
                                 n_soundscapes=80, seed=3, load=False)
    return run_search(cache, stage="per-class", folds=1, seed=0)


class _Executor:
    """An executor stand-in: ``submit`` returns a future holding ``answer`` (the same bytes
    for every figure, or an exception) without running the function, and records what it was
    asked; ``answer=None``: ``submit`` itself fails, as a broken pool's does."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def submit(self, fn, jobs):
        from concurrent.futures import Future
        self.asked.append(fn)
        if self.answer is None:
            raise OSError("the pool is broken")
        f = Future()
        if isinstance(self.answer, Exception):
            f.set_exception(self.answer)
        else:
            f.set_result([self.answer] * len(jobs))
        return f


def test_a_worker_process_draws_the_threshold_figures_byte_for_byte(swept, tmp_path):
    """With the search's worker processes (`search.settings.worker_pool`, as casdri-search
    passes them), one worker draws the threshold figures; every file equals the one drawn in
    this process."""
    from search.settings import worker_pool
    here = report.write_outputs(swept, tmp_path / "here")
    assert sum(k.startswith("score against") for k in here) >= 2

    class Watched:  # the loky executor, its futures kept (a failed one is drawn here)
        def __init__(self):
            self.pool, self.futures = worker_pool(1), []

        def submit(self, fn, *args):
            self.futures.append(self.pool.submit(fn, *args))
            return self.futures[-1]

    watched = Watched()
    worker = report.write_outputs(swept, tmp_path / "worker", executor=watched)
    assert len(watched.futures) == 1 and watched.futures[0].exception() is None
    assert len(watched.futures[0].result()) == sum(k.startswith("score against") for k in here)
    assert _snapshot(tmp_path / "worker") == _snapshot(tmp_path / "here")
    assert list(worker) == list(here)  # the report's order


def test_the_workers_figures_are_used_and_a_failed_worker_is_drawn_here(swept, tmp_path):
    here = _snapshot(report.write_outputs(swept, tmp_path / "here")["report"].parent)
    fake = _Executor(b"drawn by the worker")
    out = report.write_outputs(swept, tmp_path / "fake", executor=fake)
    assert fake.asked == [report._draw_thresholds]
    thresholds = [k for k in out if k.startswith("score against")]
    assert thresholds and all(out[k].read_bytes() == b"drawn by the worker" for k in thresholds)
    assert out["per-class CAPI-SDRi"].read_bytes() == here["figures/per_class.png"]
    for name, answer in (("died", RuntimeError("the worker died")), ("broken", None)):
        report.write_outputs(swept, tmp_path / name, executor=_Executor(answer))
        assert _snapshot(tmp_path / name) == here
