"""User-facing errors: what is wrong, and the setting or command that fixes it."""


def first_error(exc, where_default: str) -> tuple[str, str, str]:
    """A pydantic ValidationError's first error as (dotted field path or `where_default`, message
    without pydantic's "Value error, " prefix, error type): the one line every caller reports."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or where_default
    return where, err["msg"].removeprefix("Value error, "), err["type"]


class PwdAgentError(Exception):
    """An error the user can fix; the CLI prints message and hint and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(PwdAgentError):
    """A bad config file, key or value."""


class CorpusError(PwdAgentError):
    """The corpus is missing, empty or unreadable."""


class RunNotFoundError(PwdAgentError):
    """No run with that id under the runs folder."""


class StudentError(PwdAgentError):
    """The student model cannot be found or loaded."""


class TrainingError(PwdAgentError):
    """The training subprocess failed; the message carries its last log lines."""

    exit_code = 4


class StoreError(PwdAgentError):
    """The run's store cannot be opened: its driver is not installed, or its server cannot be reached."""


class RunLockedError(PwdAgentError):
    """Another process is driving the run."""


class EndpointUnavailableError(PwdAgentError):
    """The LLM endpoint kept failing after every retry; the run stops with its state saved."""

    exit_code = 5


class BudgetExceededError(PwdAgentError):
    """The next LLM call would pass llm.max_cost."""

    exit_code = 3


class RunPaused(PwdAgentError):
    """Not a failure: the run stopped at a node boundary because someone asked (`pwd-agent pause`)."""

    exit_code = 6
    label = "paused"


class GateRejected(PwdAgentError):
    """A reviewer rejected what waited at a gate; the run stops there (resume asks again)."""

    exit_code = 3
