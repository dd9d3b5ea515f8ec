"""BuildConfig: options refused on construction, one line naming the option."""

import os

import pytest

from tzc_data.build.config import BuildConfig
from tzc_data.errors import ConfigError


@pytest.mark.parametrize("field", ["out", "system", "revision", "exclude", "tokenizer", "source"])
def test_text_that_is_not_utf8_is_refused_naming_the_option(field):
    """The Python API's way to the manifest's UnicodeEncodeError (the CLI refuses such argv first)."""
    bad = os.fsdecode(b"bx\xff")
    value = (bad,) if field == "exclude" else bad
    options = {"out": "out", "start": 0, "stop": 4, "source": "synthetic", field: value}
    with pytest.raises(ConfigError, match=rf"^--{field} 'bx\\xff' is not valid UTF-8: text options and paths "
                                          "must be valid UTF-8$"):
        BuildConfig(**options)
