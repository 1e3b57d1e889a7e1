"""MkDocs hook: hamnet's docstrings name other objects with Sphinx roles (``:func:`train```), which
mkdocstrings renders as the role's text followed by the code; this drops the role's text, leaving the code."""

import re

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub("", html)
