"""Answering for the champion: the HTTP scoring server that follows its alias (``server``)
and ``skinlesion predict`` for image files."""
