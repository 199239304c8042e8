"""Progress events feed the terminal bars: stage units, training steps, evaluation slices."""

import io

from rich.console import Console

from pwd_agent.events import Progress, emit, set_progress_sink
from pwd_agent.nodes.train import _step_counts
from pwd_agent.progress import RichBars


class Recorder:
    def __init__(self):
        self.calls, self.closed = [], False

    def update(self, node, done, total):
        self.calls.append((node, done, total))

    def close(self):
        self.closed = True


def test_progress_events_reach_the_sink_and_plain_events_do_not(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    sink = Recorder()
    set_progress_sink(sink)
    try:
        emit(url, "extract", "54 chunks to extract")
        bar = Progress(url, "extract", "chunks", total=3)
        for _ in range(3):
            bar.advance()
        emit(url, "train", "step 5/20 loss 1.2", **_step_counts("step 5/20 loss 1.2"))
    finally:
        set_progress_sink(None)
    assert sink.calls == [("extract", 1, 3), ("extract", 2, 3), ("extract", 3, 3), ("train", 5, 20)]
    assert sink.closed
    assert _step_counts("done: loss 3.1 -> 2.2") == {}


def test_rich_bars_draw_and_start_a_new_bar_when_a_count_goes_back():
    out = io.StringIO()
    bars = RichBars(Console(file=out, force_terminal=True, width=100))
    bars.update("train", 10, 20)
    bars.update("train", 20, 20)
    bars.update("train", 3, 20)  # the next round's training
    bars.close()
    tasks = bars.progress.tasks
    assert [(t.description, t.completed, t.total) for t in tasks] == [("train", 20, 20), ("train", 3, 20)]
    assert "20/20" in out.getvalue()
