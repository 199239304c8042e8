"""pwd-agent: Programming with Data, test-driven data engineering for LLMs."""

__version__ = "0.1.0"
