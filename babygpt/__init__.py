"""
babygpt's library: everything the scripts at the top (train.py, sample.py, serve.py, web.py, bench.py, ...)
share, one job per module. It imports none of those scripts and nothing under data/; model.py (the GPT) and
configurator.py (settings) are the two top-level modules it builds on. docs/architecture.md maps it.
"""
