"""Serve a GGUF model on 127.0.0.1 with llama.cpp's own OpenAI-compatible server (xllamacpp wheel).

Usage: python tests/servers/llama_server.py MODEL.gguf PORT  (runs until killed)
"""

import sys
import time

import xllamacpp as xlc

params = xlc.CommonParams()
params.model.path = sys.argv[1]
params.n_ctx = 4096
params.n_parallel = 1
params.cpuparams.n_threads = 2
params.cpuparams_batch.n_threads = 2
params.hostnames = ["127.0.0.1"]
params.port = int(sys.argv[2])
server = xlc.Server(params)
print("ready", flush=True)
while True:
    time.sleep(1)
