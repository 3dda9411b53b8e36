"""One self-contained HTML page and a model card per run (``report.py``).

:mod:`.layout` names the files read, :mod:`.build` reads them into plain data,
:mod:`.model_card` turns that into a model card, :mod:`.images` and
:mod:`.render` make the page, :mod:`.write` puts the files into the run folder.
"""
