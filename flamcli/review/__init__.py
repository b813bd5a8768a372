"""`flam review`: annotators check and correct detections in a local web page.

:class:`ReviewFolder` is the library (load a `flam detect -o` folder, decide, undo, export);
:class:`ReviewServer` serves the page in ``static/`` for it.
"""

from .folder import DecisionError, ReviewError, ReviewEvent, ReviewFile, ReviewFolder
from .server import ReviewServer

__all__ = ["DecisionError", "ReviewError", "ReviewEvent", "ReviewFile", "ReviewFolder",
           "ReviewServer"]
