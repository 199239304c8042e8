"""Progress bars on a terminal: one rich bar per long stage (chunks, chains, training steps,
evaluation slices), fed by the same events the log records. Off with --quiet or when stdout is
not a terminal (CI, pipes, `nohup`), where the log lines alone are printed."""

from __future__ import annotations


class RichBars:
    """Receives (node, done, total) from `events.emit`; a count that goes back starts a new bar
    (a new round's training or evaluation)."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=console)
        self.tasks: dict[str, tuple[int, int]] = {}  # node -> (task id, last done)
        self.progress.start()

    def update(self, node: str, done: int, total: int) -> None:
        task, last = self.tasks.get(node, (None, -1))
        if task is None or done < last:
            task = self.progress.add_task(node, total=total)
        self.progress.update(task, completed=done, total=total)
        self.tasks[node] = (task, done)

    def close(self) -> None:
        self.progress.stop()
