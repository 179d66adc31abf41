"""The tiny world: synthetic data, a tokenizer and tiny models that the project builds itself.

`python -m helpers.tiny build` builds it; helpers.runtime.get_profile() does so on first use.
"""
