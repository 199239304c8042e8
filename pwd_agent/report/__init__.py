"""Reading a run back: status tables, logs (plots and HTML reports come later)."""
