"""Looking at a build: ``stats`` (:mod:`.stats`), ``inspect`` (:mod:`.inspect`), ``explain``
(:mod:`.explain`) and the HTML ``report`` (:mod:`.report`). Read side: it imports the loaders and
:mod:`tzc_data.text`, never the build.
"""
