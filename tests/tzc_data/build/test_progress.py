"""The map's progress: a bar only where one is shown, and the rows counted either way."""

import io
import subprocess
import sys

from tzc_data.build.progress import Tally, progress_bar


def test_a_bar_not_shown_is_a_tally_and_tqdm_stays_unimported():
    code = ("import sys\nfrom tzc_data.build.progress import progress_bar\n"
            "bar = progress_bar(100, 10, False)\nbar.update(5)\nbar.set_postfix(units='1/2')\nbar.close()\n"
            "print(type(bar).__name__, bar.n, bar.disable, 'tqdm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["Tally", "15", "True", "False"]


def test_without_a_terminal_the_default_is_no_bar_and_asked_for_it_is_tqdm_s(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(progress_bar(100, 0, None), Tally)
    bar = progress_bar(100, 0, True)
    assert not bar.disable
    bar.update(40)
    bar.close()
    assert bar.n == 40 and "40/100" in sys.stderr.getvalue()
