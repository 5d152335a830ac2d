"""Bridges to the evaluation tools people already use (promptfoo, Inspect).

Each module turns another tool's files into llmpo's own: a configuration to run, or recorded
judgments to replay. promptfoo's files are read by their documented formats, without promptfoo;
Inspect's logs are read, and llmpo's selection run as an Inspect task, with the ``inspect-ai``
package (the ``inspect`` extra), imported only when used.
"""
