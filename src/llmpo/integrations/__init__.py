"""Bridges to the evaluation tools people already use (promptfoo, Inspect).

Each module turns another tool's files into llmpo's own: a configuration to run, or recorded
judgments to replay. None of them imports the other tool; they read its documented file formats.
"""
