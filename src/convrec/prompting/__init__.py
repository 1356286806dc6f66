"""Prompt learning over frozen pretrained backbones (UniCRS, STEP, MSCRS).

prefix      prompt modules: token projection, semantic fusion, task prefixes, KV prefixes
backbone    what the frozen backbones share (precision, the prefix cache)
lm          a frozen causal LM under a prefix (recommendation in the papers, conversation)
encoder     a frozen BERT-family encoder under deep prompts (recommendation here)
fformer     STEP's F-Former; alignment its four losses; curriculum their schedule
"""
