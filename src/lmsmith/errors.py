"""One exception type for mistakes a user can fix: the CLI prints it as one line, no traceback."""


class LmsmithError(Exception):
    """A problem the user can fix. `hint` says how."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class IntegrityError(LmsmithError):
    """A stored file no longer matches its recorded hash."""
