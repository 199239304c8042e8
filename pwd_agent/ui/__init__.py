"""`pwd-agent ui`: a local web page to watch and steer runs (Starlette, Jinja templates, server-sent
events and a little vendored JavaScript). It reads the store and calls the CLI's own functions."""
