"""Allow `python -m pwd_agent`."""

from pwd_agent.cli import main

main()
